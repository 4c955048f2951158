package replicator

// Shopify posts the resource itself as the body; X-Shopify-Topic names the event. Topics are listed rather
// than matched by prefix: orders/edited carries an order edit, not an order, and */delete topics carry only
// {"id": ...}, which would insert an empty row for an object never seen.

func shopifyService(resource, description string, topics []string, cols ...Column) *Service {
	return &Service{
		Name:            "shopify_" + resource + "_v1",
		Description:     description,
		Verifier:        VerifierShopify,
		Events:          EventFilter{Header: "X-Shopify-Topic", Equals: topics},
		RemoteKey:       key("shopify_id", "id"),
		Columns:         cols,
		TimestampColumn: "updated_at",
		Policy:          NewerWins,
	}
}

func shopifyServices() []*Service {
	return []*Service{
		shopifyService("customer", "Shopify customers.",
			[]string{"customers/create", "customers/update", "customers/enable", "customers/disable"},
			isoTime("created_at"),
			text("currency"),
			text("email").indexed(),
			text("first_name"),
			text("last_name"),
			text("phone"),
			text("state"),
			text("tags"),
			isoTime("updated_at"),
			boolean("verified_email"),
		),
		shopifyService("order", "Shopify orders.",
			[]string{"orders/create", "orders/updated", "orders/paid", "orders/cancelled", "orders/fulfilled", "orders/partially_fulfilled"},
			bigint("app_id"),
			isoTime("cancelled_at"),
			text("cart_token"),
			text("checkout_token"),
			isoTime("closed_at"),
			isoTime("created_at").indexed(),
			text("currency"),
			bigint("customer_id").at("customer.id").indexed(),
			text("email").indexed(),
			text("financial_status"),
			text("fulfillment_status"),
			text("name"),
			bigint("order_number"),
			text("phone"),
			text("token"),
			numeric("total_price"),
			isoTime("updated_at"),
			bigint("user_id"),
		),
		shopifyService("product", "Shopify products.",
			[]string{"products/create", "products/update"},
			isoTime("created_at"),
			text("handle").indexed(),
			text("product_type"),
			isoTime("published_at"),
			text("status"),
			text("tags"),
			text("title"),
			isoTime("updated_at"),
			text("vendor"),
		),
	}
}
