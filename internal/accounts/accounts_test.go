package accounts

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// A token that cannot be one of ours is refused without a look at the database (a nil DB would panic).
func TestMalformedTokensNeverReachTheDatabase(t *testing.T) {
	t.Parallel()
	for _, tok := range []string{"", "whdb_", "whdb_short", "Bearer x", "whdb_" + strings.Repeat("A", 32), "whdb_" + strings.Repeat("a", 33),
		"whdb_" + strings.Repeat("1", 32), "xxxx_" + strings.Repeat("a", 32)} {
		if _, err := Authenticate(context.Background(), nil, tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%q: %v", tok, err)
		}
	}
	if !WellFormedToken("whdb_" + strings.Repeat("a2", 16)) {
		t.Error("a token of CreateToken's shape is refused")
	}
}
