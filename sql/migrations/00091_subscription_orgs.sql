-- +goose Up
-- Orgs with subscriptions, as the fanout must see them (internal/subscriptions):
--  * noticed_at: when a fanout's list of subscribed orgs first held the org; from then on every org
--    transaction records its rows in the outbox. Creating the first subscription of an org waits for it, so a
--    change that reaches the fanout after create returns is notified.
--  * unsubscribed_at: the org's last subscription was deleted then; its outbox may still hold rows, which the
--    relay keeps draining (and discarding: nothing matches) until it finds the outbox empty.
CREATE TABLE subscription_orgs (
    org_id          bigint PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    noticed_at      timestamptz,
    unsubscribed_at timestamptz
);
INSERT INTO subscription_orgs (org_id, noticed_at) SELECT DISTINCT org_id, now() FROM subscriptions;

-- +goose Down
DROP TABLE subscription_orgs;
