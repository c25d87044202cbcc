-- Incidents: what happens to a partition whose stored offset the broker
-- no longer has. See store/lease.go.

-- name: SupersedeDeadLetters :execrows
-- Moves the dead letters of a partition from an offset on to
-- dead_letters_superseded, naming the incident just recorded in this
-- transaction (InsertIncident): the partition's log started over, and its
-- new messages take those positions.
WITH moved AS (
    DELETE FROM dead_letters AS d
    WHERE d.topic = @topic AND d.partition = @partition AND d."offset" >= @from_offset
    RETURNING d.id, d.topic, d.partition, d."offset", d.key, d.value, d.headers, d.reason, d.error, d.received_at
)
INSERT INTO dead_letters_superseded (id, topic, partition, "offset", key, value, headers, reason, error, received_at, incident_id)
SELECT m.id, m.topic, m.partition, m."offset", m.key, m.value, m.headers, m.reason, m.error, m.received_at,
       currval(pg_get_serial_sequence('consumer_incidents', 'id'))
FROM moved AS m;
