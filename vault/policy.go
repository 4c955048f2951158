package vault

import (
	"fmt"
	"strings"
)

// Policy returns the Vault policy (HCL) that webhookdb's token needs, and no more: its database
// connections, org roles and fanout static roles, lease renewal and revocation, and one transit key. Write it
// with `vault policy write webhookdb -` and give webhookdb a periodic token carrying it (leases belong to
// the token that created them: revoking the token revokes every issued credential).
func Policy(databaseMount, transitMount, transitKey string) string {
	db := strings.Trim(databaseMount, "/")
	tr := strings.Trim(transitMount, "/")
	var b strings.Builder
	rule := func(path string, caps ...string) {
		fmt.Fprintf(&b, "path %q {\n  capabilities = [%s]\n}\n", path, `"`+strings.Join(caps, `", "`)+`"`)
	}
	rule(db+"/config/*", "create", "read", "update")
	rule(db+"/rotate-root/*", "update")
	rule(db+"/roles/org-*", "create", "read", "update", "delete")
	rule(db+"/creds/org-*", "read")
	rule(db+"/static-roles/webhookdb-fanout-*", "create", "read", "update")
	rule(db+"/static-creds/webhookdb-fanout-*", "read")
	rule(db+"/rotate-role/webhookdb-fanout-*", "update")
	rule("sys/leases/renew", "update")
	rule("sys/leases/revoke", "update")
	rule("sys/leases/lookup", "update")
	rule("sys/leases/revoke-prefix/"+db+"/creds/*", "update", "sudo")
	rule(tr+"/keys/"+transitKey, "create", "read", "update")
	rule(tr+"/keys/"+transitKey+"/rotate", "update")
	rule(tr+"/keys/"+transitKey+"/config", "update")
	rule(tr+"/encrypt/"+transitKey, "update")
	rule(tr+"/decrypt/"+transitKey, "update")
	rule(tr+"/rewrap/"+transitKey, "update")
	return b.String()
}
