// Package replicator is the catalog of replicated services: declarative descriptions of how a third-party
// webhook becomes typed rows in an organization's database.
//
// A [Service] says which events carry its resource, where the resource sits in the event, which value is
// the remote key, which typed columns to denormalise out of it, and which conflict policy decides whether an
// incoming copy replaces the stored one. From that one description the package derives everything the rest
// of webhookdb needs:
//
//   - [Service.Extract] turns a received webhook into zero or more [Row] values. A JSON body is read in place
//     (rawjson.go: values found by scanning its bytes, the data column the resource's own bytes); a body that
//     decoding would change (escaped NULs, surrogate escapes, invalid UTF-8) and forms are decoded instead. The
//     data column's key order and spacing therefore follow the sender: jsonb does not keep them;
//   - [Service.EnsureTableSQL] creates the table, and adds and fills columns added to the service later;
//   - [Service.Upsert] builds one INSERT ... SELECT FROM unnest(...) ON CONFLICT statement for a batch;
//   - [Service.Dedupe] collapses a batch to one row per remote key, as the policy would.
//
// Every column has a Go conversion (used by Extract) and an equivalent SQL expression over the stored data
// column (used to fill a column added to an existing table). Both live side by side in convert.go and share
// their validating patterns, so a row gets the same typed value whichever way it was written.
//
// Services are looked up with [All], [Lookup] and [Resolve]; the configurable ones (standard_event_v1 and
// json_v1) need [Resolve] with the integration's JSON configuration (standard_event_v1 accepts an empty one)
// before they can extract anything.
// Renaming a column or changing its type is never done in place: it takes a new _vN service.
package replicator
