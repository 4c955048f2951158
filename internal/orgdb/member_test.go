package orgdb_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/orgdb"
)

// newMember creates a user and makes them a member of the org; it returns the user's id.
func (e *env) newMember(o *orgdb.Org, email string) int64 {
	e.t.Helper()
	ctx := context.Background()
	var id int64
	if err := e.pool.QueryRow(ctx, `INSERT INTO users (email) VALUES ($1) RETURNING id`, email).Scan(&id); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `INSERT INTO memberships (org_id, user_id, role) VALUES ($1, $2, 'member')`, o.ID, id); err != nil {
		e.t.Fatal(err)
	}
	return id
}

// removeMembership deletes the membership row (what the API does before calling RevokeMember).
func (e *env) removeMembership(o *orgdb.Org, userID int64) {
	e.t.Helper()
	if _, err := e.pool.Exec(context.Background(), `DELETE FROM memberships WHERE org_id = $1 AND user_id = $2`, o.ID, userID); err != nil {
		e.t.Fatal(err)
	}
}

// mustRead connects with a URL and reads the org's table; it fails the test when either does not work.
func mustRead(t *testing.T, rawURL, what string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, rawURL)
	if err != nil {
		t.Fatalf("%s: connect: %v", what, err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM items`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%s: read %d rows: %v", what, n, err)
	}
}

func mustNotConnect(t *testing.T, rawURL, what string) {
	t.Helper()
	ctx := context.Background()
	if conn, err := pgx.Connect(ctx, rawURL); err == nil {
		conn.Close(ctx)
		t.Fatalf("%s still logs in", what)
	}
}

// Each member gets a login of their own and the server one of its own: member A changing its own password
// and role settings locks out neither member B nor the server's login (what db sql uses).
func TestMemberChangingItsLoginLocksOutNobody(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := newEnv(t, mode, envOptions{})
			o := e.newOrg("own_" + mode[:2])
			asOwner(t, e.clusterOf(o), o, `CREATE TABLE items (id int); INSERT INTO items VALUES (1)`)
			alice, _, credA, credB, service := e.twoMembers(o, "own-"+mode)
			if credA.Username == credB.Username || credA.Username == service.Username || credB.Username == service.Username {
				t.Fatalf("logins shared: alice %s, bob %s, service %s", credA.Username, credB.Username, service.Username)
			}
			if credA.Kind != orgdb.KindMember || service.Kind != orgdb.KindService {
				t.Fatalf("kinds %q and %q", credA.Kind, service.Kind)
			}
			if again, err := e.svc.MemberConnection(ctx, o.ID, alice); err != nil || again.URL != credA.URL {
				t.Fatalf("alice's second db connection returned other credentials (%v)", err)
			}
			bobSession, err := pgx.Connect(ctx, credB.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer bobSession.Close(ctx)

			evil, err := pgx.Connect(ctx, credA.URL)
			if err != nil {
				t.Fatal(err)
			}
			for _, sql := range []string{
				`SET default_transaction_read_only = off`,
				`ALTER ROLE CURRENT_USER PASSWORD 'alice-changed-it-0123456789'`,
				`ALTER ROLE CURRENT_USER SET statement_timeout = 0`,
				`ALTER ROLE CURRENT_USER SET default_transaction_read_only = off`,
			} {
				if _, err := evil.Exec(ctx, sql); err != nil {
					t.Fatalf("%s: %v (the test needs a member who can change its own login)", sql, err)
				}
			}
			evil.Close(ctx)
			mustNotConnect(t, credA.URL, "alice's URL after she changed her password")

			mustRead(t, credB.URL, "bob's login")
			mustRead(t, service.URL, "the service login")
			if err := bobSession.Ping(ctx); err != nil {
				t.Fatalf("bob's open session: %v", err)
			}
			if cur, err := e.svc.ServiceConnection(ctx, o.ID); err != nil || cur.URL != service.URL {
				t.Fatalf("service login changed (%v)", err)
			}
			var readOnly string
			if err := bobSession.QueryRow(ctx, `SHOW default_transaction_read_only`).Scan(&readOnly); err != nil || readOnly != "on" {
				t.Fatalf("bob's default_transaction_read_only = %q (%v)", readOnly, err)
			}

			// Alice repairs her own login by rolling it; bob's session and login are untouched.
			rolled, err := e.svc.RollMemberCredentials(ctx, o.ID, alice)
			if err != nil {
				t.Fatal(err)
			}
			if rolled.Username == credA.Username {
				t.Fatal("roll returned alice's old login")
			}
			mustRead(t, rolled.URL, "alice's rolled login")
			if err := bobSession.Ping(ctx); err != nil {
				t.Fatalf("bob's session after alice's roll: %v", err)
			}
			mustRead(t, credB.URL, "bob's login after alice's roll")
			mustRead(t, service.URL, "the service login after alice's roll")
		})
	}
}

// Removing a member revokes that member's logins at once (sessions closed), and only theirs; a membership
// deleted without RevokeMember (a crash between the two) is caught by the maintenance pass.
func TestRemovingAMemberRevokesTheirLogins(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := newEnv(t, mode, envOptions{})
			o := e.newOrg("rm_" + mode[:2])
			asOwner(t, e.clusterOf(o), o, `CREATE TABLE items (id int); INSERT INTO items VALUES (1)`)
			alice, bob, carol := e.newMember(o, "alice@rm-"+mode+".example"), e.newMember(o, "bob@rm-"+mode+".example"), e.newMember(o, "carol@rm-"+mode+".example")
			credA, err := e.svc.MemberConnection(ctx, o.ID, alice)
			if err != nil {
				t.Fatal(err)
			}
			credB, err := e.svc.MemberConnection(ctx, o.ID, bob)
			if err != nil {
				t.Fatal(err)
			}
			credC, err := e.svc.MemberConnection(ctx, o.ID, carol)
			if err != nil {
				t.Fatal(err)
			}
			service, err := e.svc.ServiceConnection(ctx, o.ID)
			if err != nil {
				t.Fatal(err)
			}
			session, err := pgx.Connect(ctx, credA.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer session.Close(ctx)

			e.removeMembership(o, alice)
			if err := e.svc.RevokeMember(ctx, o.ID, alice); err != nil {
				t.Fatal(err)
			}
			if err := session.Ping(ctx); err == nil {
				t.Fatal("the removed member's session survived")
			}
			mustNotConnect(t, credA.URL, "the removed member's login")
			if _, err := e.svc.MemberConnection(ctx, o.ID, alice); !errors.Is(err, orgdb.ErrNotMember) {
				t.Fatalf("db connection of a removed member: %v, want ErrNotMember", err)
			}
			if _, err := e.svc.RollMemberCredentials(ctx, o.ID, alice); !errors.Is(err, orgdb.ErrNotMember) {
				t.Fatalf("roll-credentials of a removed member: %v, want ErrNotMember", err)
			}
			mustRead(t, credB.URL, "another member's login")
			mustRead(t, service.URL, "the service login")

			// The backstop: membership gone, RevokeMember never called.
			e.removeMembership(o, carol)
			if _, err := e.svc.Maintain(ctx); err != nil {
				t.Fatal(err)
			}
			mustNotConnect(t, credC.URL, "a login of a member removed without RevokeMember, after maintenance")
			mustRead(t, credB.URL, "another member's login after maintenance")
			mustRead(t, service.URL, "the service login after maintenance")
		})
	}
}

// roll-credentials --all revokes every member's login and rolls the service login; the caller gets a new one,
// the others get theirs on their next db connection.
func TestRollAllCredentials(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := newEnv(t, mode, envOptions{})
			o := e.newOrg("all_" + mode[:2])
			asOwner(t, e.clusterOf(o), o, `CREATE TABLE items (id int); INSERT INTO items VALUES (1)`)
			alice, bob, credA, credB, service := e.twoMembers(o, "all-"+mode)
			bobSession, err := pgx.Connect(ctx, credB.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer bobSession.Close(ctx)

			rolled, err := e.svc.RollAllCredentials(ctx, o.ID, alice)
			if err != nil {
				t.Fatal(err)
			}
			if rolled.Username == credA.Username || rolled.Kind != orgdb.KindMember {
				t.Fatalf("roll --all returned %s (%s), alice had %s", rolled.Username, rolled.Kind, credA.Username)
			}
			mustRead(t, rolled.URL, "alice's new login")
			for what, u := range map[string]string{"alice's old login": credA.URL, "bob's old login": credB.URL, "the old service login": service.URL} {
				mustNotConnect(t, u, what)
			}
			if err := bobSession.Ping(ctx); err == nil {
				t.Fatal("bob's session survived roll --all")
			}
			if cur, err := e.svc.MemberConnection(ctx, o.ID, alice); err != nil || cur.URL != rolled.URL {
				t.Fatalf("alice's db connection after roll --all returned other credentials (%v)", err)
			}
			nextB, err := e.svc.MemberConnection(ctx, o.ID, bob)
			if err != nil {
				t.Fatal(err)
			}
			mustRead(t, nextB.URL, "bob's next login")
			nextService, err := e.svc.ServiceConnection(ctx, o.ID)
			if err != nil {
				t.Fatal(err)
			}
			if nextService.Username == service.Username {
				t.Fatal("service login not rolled")
			}
			mustRead(t, nextService.URL, "the new service login")
		})
	}
}

// twoMembers adds two members to o and returns their ids, their own logins and the org's service login.
func (e *env) twoMembers(o *orgdb.Org, tag string) (alice, bob int64, credA, credB, service *orgdb.Credential) {
	e.t.Helper()
	ctx := context.Background()
	alice, bob = e.newMember(o, "alice@"+tag+".example"), e.newMember(o, "bob@"+tag+".example")
	var err error
	if credA, err = e.svc.MemberConnection(ctx, o.ID, alice); err != nil {
		e.t.Fatal(err)
	}
	if credB, err = e.svc.MemberConnection(ctx, o.ID, bob); err != nil {
		e.t.Fatal(err)
	}
	if service, err = e.svc.ServiceConnection(ctx, o.ID); err != nil {
		e.t.Fatal(err)
	}
	return alice, bob, credA, credB, service
}
