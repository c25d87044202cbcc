package consumer

import (
	"fmt"
	"testing"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/require"
)

// TestSecretIsNeverFormatted: a SASL password printed by any fmt verb, on
// its own or inside the configuration, shows as [redacted].
func TestSecretIsNeverFormatted(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.SASL = SASL{Mechanism: SASLSCRAMSHA512, Username: "projector", Password: "s3cret-pw"}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		require.NotContains(t, fmt.Sprintf(verb, cfg), "s3cret-pw", verb)
		require.NotContains(t, fmt.Sprintf(verb, cfg.SASL), "s3cret-pw", verb)
		require.NotContains(t, fmt.Sprintf(verb, cfg.SASL.Password), "s3cret-pw", verb)
	}
	require.Equal(t, "s3cret-pw", cfg.SASL.Password.Reveal())
}

// TestSaramaConfigCarriesSecurity: the one sarama configuration has the
// TLS and SASL settings, for both kinds of client, and sarama accepts it.
func TestSaramaConfigCarriesSecurity(t *testing.T) {
	t.Parallel()
	tc, err := LoadTLS(TLSFiles{})
	require.NoError(t, err)
	for _, mech := range []string{SASLPlain, SASLSCRAMSHA256, SASLSCRAMSHA512} {
		cfg := DefaultConfig()
		cfg.TLS = tc
		cfg.SASL = SASL{Mechanism: mech, Username: "projector", Password: "pw"}
		require.NoError(t, cfg.Validate())
		for _, kind := range []ClientKind{ConsumerClient, LookupClient} {
			sc := NewSaramaConfig(cfg, kind)
			require.NoError(t, sc.Validate(), mech)
			require.True(t, sc.Net.TLS.Enable)
			require.Same(t, tc, sc.Net.TLS.Config)
			require.True(t, sc.Net.SASL.Enable)
			require.Equal(t, sarama.SASLMechanism(mech), sc.Net.SASL.Mechanism)
			require.Equal(t, mech != SASLPlain, sc.Net.SASL.SCRAMClientGeneratorFunc != nil, mech)
		}
	}
	sc := NewSaramaConfig(DefaultConfig(), ConsumerClient)
	require.False(t, sc.Net.TLS.Enable)
	require.False(t, sc.Net.SASL.Enable)
}
