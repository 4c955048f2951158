-- +goose Up
-- The dispatcher's first question, every poll: is any pending delivery due and not leased? Deliveries the
-- dispatcher holds (handed over leased by Record, or claimed) are pending with a lease in the future, so this
-- index holds them under their lease's end and the probe skips them; the next_attempt_at index it replaces
-- made the probe walk every leased delivery.
CREATE INDEX subscription_deliveries_ready_idx ON subscription_deliveries ((greatest(next_attempt_at, locked_until)))
    WHERE status = 'pending';
DROP INDEX subscription_deliveries_due_idx;
-- Record asks, per new delivery, for the pending ones of its key: by the key first, so that no plan (one made
-- while the table was small and had no statistics, say) walks an endpoint's every pending delivery instead.
DROP INDEX subscription_deliveries_key_idx;
CREATE INDEX subscription_deliveries_key_idx ON subscription_deliveries (remote_key) WHERE status = 'pending';

-- +goose Down
DROP INDEX subscription_deliveries_key_idx;
CREATE INDEX subscription_deliveries_key_idx ON subscription_deliveries (subscription_id, remote_key, id) WHERE status = 'pending';
CREATE INDEX subscription_deliveries_due_idx ON subscription_deliveries (next_attempt_at) WHERE status = 'pending';
DROP INDEX subscription_deliveries_ready_idx;
