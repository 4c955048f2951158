package replicator

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhookdb-go/webhookdb/internal/bench/cpuacct"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
)

// BenchmarkUpsert measures what the fanout's write of a batch costs an org database's backend per row, and
// what the alternatives would: the CPU time of the cluster's processes per row, read from /proc, on a cluster
// with fsync and synchronous commit on. Each variant writes 150-row batches of new Stripe charges (what a
// 300-event drain batch dedupes to) into its own table over one warm connection, so connection and
// first-statement costs are left out.
//
//	go test -run '^$' -bench Upsert -benchtime 200x ./internal/replicator/
func BenchmarkUpsert(b *testing.B) {
	ctx := context.Background()
	cluster := pgtest.NewDurableCluster(b)
	conn, err := cluster.Connect(ctx, "postgres")
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	RegisterEncodedArrays(conn.TypeMap())
	svc, _ := Lookup("stripe_charge_v1")
	const size = 150
	seq := 0
	batch := func(newer bool) []Row {
		rows := make([]Row, 0, size)
		for range size {
			seq++
			n := seq
			if newer {
				n = (seq-1)%(2*size) + 1 // one of the charges the two setup batches wrote, in a newer event
			}
			created := 1719000000 + n
			if newer {
				created = 1729000000 + seq
			}
			body := drainCharge(n, created)
			rs, err := svc.Extract(Webhook{Body: body, ReceivedAt: time.Now()})
			if err != nil || len(rs) != 1 {
				b.Fatalf("extract: %v %d", err, len(rs))
			}
			rows = append(rows, rs...)
		}
		return rows
	}
	create := func(table string, indexes bool, alter string) {
		for _, s := range svc.EnsureTableSQL("", table) {
			if !indexes && strings.HasPrefix(s, "CREATE INDEX") {
				continue
			}
			if _, err := conn.Exec(ctx, s); err != nil {
				b.Fatal(err)
			}
		}
		if alter != "" {
			if _, err := conn.Exec(ctx, "ALTER TABLE "+table+" "+alter); err != nil {
				b.Fatal(err)
			}
		}
	}
	txn := func(sql string, args ...any) error {
		bt := &pgx.Batch{}
		bt.Queue("BEGIN")
		bt.Queue(sql, args...)
		bt.Queue("COMMIT")
		return conn.SendBatch(ctx, bt).Close()
	}
	upsert := func(table string, rows []Row) error {
		sql, args := svc.Upsert("", table, rows)
		return txn(sql, args...)
	}
	// onNewConn runs write over a connection of its own, as a fanout worker does for an org whose
	// connection it does not hold: the fork, authentication and the cold caches of a new backend included.
	onNewConn := func(write func(table string, rows []Row) error, params ...string) func(table string, rows []Row) error {
		return func(table string, rows []Row) error {
			cfg, err := pgx.ParseConfig(cluster.URL("postgres"))
			if err != nil {
				return err
			}
			for i := 0; i+1 < len(params); i += 2 {
				cfg.RuntimeParams[params[i]] = params[i+1]
			}
			own, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				return err
			}
			defer own.Close(ctx)
			RegisterEncodedArrays(own.TypeMap())
			warm := conn
			conn = own
			defer func() { conn = warm }()
			return write(table, rows)
		}
	}
	copyCols := []string{svc.RemoteKey.Name}
	for _, c := range svc.Columns {
		copyCols = append(copyCols, c.Name)
	}
	copyCols = append(copyCols, "data")
	copySource := func(rows []Row) pgx.CopyFromSource {
		src := make([][]any, len(rows))
		for i, r := range rows {
			vals := append([]any{r.Key}, r.Values...)
			src[i] = append(vals, string(r.Data))
		}
		return pgx.CopyFromRows(src)
	}
	staged := map[string]bool{}
	copyTemp := func(table string, rows []Row) error {
		stage := "stage_" + table
		if !staged[table] {
			if _, err := conn.Exec(ctx, "CREATE TEMP TABLE "+stage+" ON COMMIT DELETE ROWS AS SELECT "+strings.Join(copyCols, ", ")+" FROM "+table+" WITH NO DATA"); err != nil {
				return err
			}
			staged[table] = true
		}
		sql, _ := svc.Upsert("", table, rows)
		from, conflict := strings.Index(sql, "FROM unnest("), strings.Index(sql, "\nON CONFLICT")
		sql = sql[:from] + "FROM " + stage + " AS v" + sql[conflict:]
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{stage}, copyCols, copySource(svc.Dedupe(rows))); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, sql)
			return err
		})
	}
	inFive := func(write func(table string, rows []Row) error) func(table string, rows []Row) error {
		return func(table string, rows []Row) error {
			for i := 0; i < 5; i++ {
				if err := write(table, rows[i*len(rows)/5:(i+1)*len(rows)/5]); err != nil {
					return err
				}
			}
			return nil
		}
	}
	variants := []struct {
		name    string
		indexes bool
		newer   bool // every batch updates the previous batch's charges
		alter   string
		write   func(table string, rows []Row) error
	}{
		{"unnest", true, false, "", upsert},
		{"unnest-lz4", true, false, "ALTER COLUMN data SET COMPRESSION lz4", upsert},
		{"unnest-inline", true, false, "SET (toast_tuple_target = 8160)", upsert},
		{"unnest-no-secondary-indexes", false, false, "", upsert},
		{"unnest-updates", true, true, "", upsert},
		{"unnest-new-connection", true, false, "", onNewConn(upsert)},
		// a new backend's first executions of a statement get custom plans, which fold the array parameters
		// into the plan as constants (copied, fresh memory); a generic plan does not
		{"unnest-new-connection-generic-plan", true, false, "", onNewConn(upsert, "plan_cache_mode", "force_generic_plan")},
		// five 30-row transactions on a new connection: what an org visited briefly costs
		{"unnest-5-txns-new-connection", true, false, "", onNewConn(inFive(upsert))},
		{"unnest-5-txns-new-connection-generic-plan", true, false, "", onNewConn(inFive(upsert), "plan_cache_mode", "force_generic_plan")},
		{"select-1-new-connection", true, false, "", onNewConn(func(string, []Row) error { _, err := conn.Exec(ctx, "SELECT 1"); return err })},
		{"copy-direct", true, false, "", func(table string, rows []Row) error {
			_, err := conn.CopyFrom(ctx, pgx.Identifier{table}, copyCols, copySource(rows))
			return err
		}},
		// the alternative to array parameters: a binary COPY into a temporary table, then one
		// INSERT ... SELECT with the same conflict handling
		{"copy-temp-upsert", true, false, "", copyTemp},
		{"copy-temp-upsert-updates", true, true, "", copyTemp},
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			table := strings.ReplaceAll(v.name, "-", "_")
			create(table, v.indexes, v.alter)
			if v.newer {
				if err := v.write(table, batch(false)); err != nil {
					b.Fatal(err)
				}
			}
			if err := v.write(table, batch(false)); err != nil { // plans, caches
				b.Fatal(err)
			}
			var cpu, wall time.Duration
			for b.Loop() {
				rows := batch(v.newer)
				from := cpuacct.Take(cluster.DataDir)
				start := time.Now()
				if err := v.write(table, rows); err != nil {
					b.Fatal(err)
				}
				wall += time.Since(start)
				to := cpuacct.Take(cluster.DataDir)
				cpu += to.Backends - from.Backends + to.Background - from.Background + to.Postmaster - from.Postmaster
			}
			n := float64(b.N * size)
			b.ReportMetric(float64(cpu.Microseconds())/n, "postgres-µs/row")
			b.ReportMetric(float64(wall.Microseconds())/n, "wall-µs/row")
		})
	}
}

// drainCharge is the Stripe charge event `webhookdb bench fanout` stages (about 1.6 KB).
func drainCharge(charge, created int) []byte {
	return fmt.Appendf(nil, `{"id":"evt_%024d","object":"event","api_version":"2024-06-20","created":%d,"type":"charge.updated","livemode":false,"pending_webhooks":1,"request":{"id":"req_8a7sd6f5g4h3j2","idempotency_key":"3f1c2d7e-9b8a-4c5d-8e7f-6a5b4c3d2e1f"},"data":{"object":{"id":"ch_%024d","object":"charge","amount":%d,"amount_captured":%d,"amount_refunded":0,"balance_transaction":"txn_3PabcdEFGH1234567890","billing_details":{"address":{"city":"Berlin","country":"DE","line1":"Main St 1","line2":null,"postal_code":"10115","state":null},"email":"jenny@example.com","name":"Jenny Rosen","phone":null},"calculated_statement_descriptor":"ACMEBOOKS","captured":true,"created":%d,"currency":"eur","customer":"cus_QabcdEFGH12345","description":"Order %d","disputed":false,"failure_code":null,"failure_message":null,"fraud_details":{},"invoice":null,"metadata":{"order_id":"%d"},"outcome":{"network_status":"approved_by_network","reason":null,"risk_level":"normal","risk_score":32,"seller_message":"Payment complete.","type":"authorized"},"paid":true,"payment_intent":"pi_3PabcdEFGH1234567890","payment_method":"pm_1PabcdEFGH1234567890","payment_method_details":{"card":{"brand":"visa","checks":{"address_line1_check":"pass","address_postal_code_check":"pass","cvc_check":"pass"},"country":"DE","exp_month":8,"exp_year":2030,"fingerprint":"Xt5EWLLDS7FJjR1c","funding":"credit","last4":"4242","network":"visa"},"type":"card"},"receipt_email":"jenny@example.com","receipt_url":"https://pay.stripe.com/receipts/payment/CAcaFwoVYWNjdF8xMDMyRDgyZVp2S1lsbzJDKNnS","refunded":false,"status":"succeeded"}}}`,
		charge, created, charge, 1000+charge%5000, 1000+charge%5000, created, charge, charge)
}
