package verify

import (
	"fmt"
	"sync"
	"testing"
)

// A verifier keeps keyed HMAC states between requests: one verifier must give every case of its scheme the
// answer a fresh one gives, in any order, from several goroutines, across more secrets than it keeps states for.
func TestOneVerifierServesEveryCase(t *testing.T) {
	t.Parallel()
	schemes := map[string]struct {
		cfg   Config
		cases []verifyCase
	}{
		"stripe":   {Config{Scheme: SchemeStripe}, stripeCases()},
		"github":   {Config{Scheme: SchemeGitHub}, githubCases()},
		"shopify":  {Config{Scheme: SchemeShopify}, shopifyCases()},
		"intercom": {Config{Scheme: SchemeIntercom}, intercomCases()},
		"standard": {Config{Scheme: SchemeStandard}, standardCases()},
	}
	for name, s := range schemes {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			v, err := New(s.cfg)
			if err != nil {
				t.Fatal(err)
			}
			var cases []verifyCase
			secrets := map[string]bool{}
			for _, tc := range s.cases {
				if tc.cfg == nil {
					cases = append(cases, tc)
					for _, sec := range tc.secrets {
						secrets[sec] = true
					}
				}
			}
			if len(cases) < 3 {
				t.Fatalf("only %d cases use the scheme's default config", len(cases))
			}
			check := func(tc verifyCase) error {
				now := tc.now
				if now.IsZero() {
					now = testNow
				}
				err := v.Verify(tc.req, tc.secrets, now)
				if (err == nil) != (tc.wantReason == "") {
					return fmt.Errorf("%s: Verify = %v, want accepted %v", tc.name, err, tc.wantReason == "")
				}
				return nil
			}
			// Forward, then backward, so each secret's state is reused after another secret's.
			for round := 0; round < 3; round++ {
				for i := range cases {
					tc := cases[i]
					if round == 1 {
						tc = cases[len(cases)-1-i]
					}
					if err := check(tc); err != nil {
						t.Fatalf("round %d: %v", round, err)
					}
				}
			}
			var wg sync.WaitGroup
			errs := make(chan error, 4*len(cases)*20)
			for g := 0; g < 4; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := 0; n < 20; n++ {
						for i := range cases {
							if err := check(cases[(i+g)%len(cases)]); err != nil {
								errs <- err
							}
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			t.Logf("%d cases, %d distinct secrets", len(cases), len(secrets))
		})
	}
}
