package staging_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhookdb-go/webhookdb/internal/bench/cpuacct"
	"github.com/webhookdb-go/webhookdb/internal/migrate"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
	"github.com/webhookdb-go/webhookdb/internal/staging"
)

// BenchmarkInsert measures what a group commit costs Postgres per row, by batch size: the CPU time of the
// cluster's backends and background processes (WAL writer, checkpointer) per staged row, read from /proc, so
// the figure does not depend on how busy the machine is the way a rate would. It starts its own cluster with
// fsync and synchronous commit on, as in production (the shared test cluster has them off), and stages
// ingest's rows: an ~840-byte Stripe event with its stored headers.
//
// Sub-benchmarks run one after the other on a growing table, and the first of each size has read as dearer
// than the next ones: compare with -count and with the variants' order reversed.
//
//	go test -run '^$' -bench Insert -benchtime 2000x ./internal/staging/
func BenchmarkInsert(b *testing.B) {
	ctx := context.Background()
	cluster := pgtest.NewDurableCluster(b)
	conn, err := cluster.Connect(ctx, "postgres")
	if err != nil {
		b.Fatal(err)
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE bench_insert")
	conn.Close(ctx)
	if err != nil {
		b.Fatal(err)
	}
	url := cluster.URL("bench_insert")
	if _, err := migrate.Up(ctx, url, nil); err != nil {
		b.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	body := []byte(`{"id":"evt_000000000000000000000000","object":"event","api_version":"2024-06-20","created":1719000000,"type":"charge.succeeded","livemode":false,"pending_webhooks":1,"request":{"id":"req_8a7sd6f5g4h3j2","idempotency_key":"3f1c2d7e-9b8a-4c5d-8e7f-6a5b4c3d2e1f"},"data":{"object":{"id":"ch_3PabcdEFGH1234567890","object":"charge","amount":2500,"amount_captured":2500,"amount_refunded":0,"balance_transaction":"txn_3PabcdEFGH1234567890","billing_details":{"address":{"city":"Berlin","country":"DE","line1":"Main St 1","postal_code":"10115"},"email":"jenny@example.com","name":"Jenny Rosen"},"captured":true,"created":1719000000,"currency":"eur","customer":"cus_QabcdEFGH12345","description":"Order 1042","paid":true,"payment_intent":"pi_3PabcdEFGH1234567890","payment_method":"pm_1PabcdEFGH1234567890","refunded":false,"status":"succeeded"}}}`)
	headers := []byte(`{"Content-Length":"839","Content-Type":"application/json"}`)
	for _, size := range []int{12, 24, 48, 96} {
		for _, how := range []string{"insert-root", "insert-partition", "copy-partition"} {
			insert := map[string]func(context.Context, *pgxpool.Pool, []staging.Row) error{
				"insert-root":      staging.InsertThroughRoot,
				"insert-partition": staging.InsertIntoDayPartition,
				"copy-partition":   staging.Insert,
			}[how]
			b.Run(fmt.Sprintf("rows=%d/%s", size, how), func(b *testing.B) {
				rows := make([]staging.Row, size)
				seq := 0
				fill := func() {
					for i := range rows {
						seq++
						rows[i] = staging.Row{ReceivedAt: time.Now(), OrgID: 1, IntegrationID: 1, DeliveryID: fmt.Sprintf("evt_%024d", seq),
							Method: "POST", Path: "", ContentType: "application/json", Headers: headers, Body: body, Accepted: true}
					}
				}
				fill()
				if err := insert(ctx, pool, rows); err != nil { // prepares the statement
					b.Fatal(err)
				}
				from := cpuacct.Take(cluster.DataDir)
				b.ResetTimer()
				for range b.N {
					fill()
					if err := insert(ctx, pool, rows); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				to := cpuacct.Take(cluster.DataDir)
				n := float64(b.N * size)
				b.ReportMetric(float64((to.Backends-from.Backends).Microseconds())/n, "backend-µs/row")
				b.ReportMetric(float64((to.Background-from.Background).Microseconds())/n, "background-µs/row")
				b.ReportMetric(float64(b.Elapsed().Microseconds())/n, "wall-µs/row")
			})
		}
	}
}
