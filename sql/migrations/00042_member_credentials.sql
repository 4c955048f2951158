-- +goose Up
-- A read-only login per member (internal/orgdb): each member of an org gets a login of their own, and the
-- server has one of its own per org (db sql, db tables), so that a member who changes their password or role
-- settings locks out nobody else. user_id is the member's user, NULL for the server's own login. It has no
-- foreign key: a credential row outlives the membership and the user (the maintenance pass revokes the
-- logins of anyone who is no longer a member).
ALTER TABLE org_credentials ADD COLUMN user_id bigint CHECK (user_id > 0);

-- Until now every member shared one login per org. Its password is known to every member who ever asked for
-- it, so it can serve neither as the server's login (any of them could change it) nor as one member's: it is
-- revoked on upgrade, by the next maintenance pass. Each member's next `db connection` issues their own.
UPDATE org_credentials SET superseded_at = coalesce(superseded_at, now()), revoke_after = now()
WHERE revoked_at IS NULL;

-- At most one current credential per org and holder.
DROP INDEX org_credentials_current_key;
CREATE UNIQUE INDEX org_credentials_current_service_key ON org_credentials (org_id)
    WHERE user_id IS NULL AND superseded_at IS NULL AND revoked_at IS NULL;
CREATE UNIQUE INDEX org_credentials_current_member_key ON org_credentials (org_id, user_id)
    WHERE user_id IS NOT NULL AND superseded_at IS NULL AND revoked_at IS NULL;

-- +goose Down
-- Members' logins are revoked by the next maintenance pass; the server's login becomes the org's only one.
UPDATE org_credentials SET superseded_at = coalesce(superseded_at, now()), revoke_after = now()
WHERE user_id IS NOT NULL AND revoked_at IS NULL;
DROP INDEX org_credentials_current_member_key;
DROP INDEX org_credentials_current_service_key;
CREATE UNIQUE INDEX org_credentials_current_key ON org_credentials (org_id)
    WHERE superseded_at IS NULL AND revoked_at IS NULL;
ALTER TABLE org_credentials DROP COLUMN user_id;
