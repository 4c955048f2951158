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

// shopifyBare maps the GraphQL Admin API's node (gid ids, camelCase, enums in capitals, tags as a list) to the
// REST-shaped webhook's row: keyed by legacyResourceId, versioned by updatedAt. Columns the node does not carry
// are left NULL.
func shopifyBare(cols ...Column) *BareObject {
	return &BareObject{
		RemoteKey: &Column{Type: TypeText, Path: "legacyResourceId"},
		Columns:   append([]Column{isoTime("created_at").at("createdAt"), isoTime("updated_at").at("updatedAt")}, cols...),
	}
}

// none is a column the GraphQL node has no counterpart for.
func none(name, typ string) Column { return Column{Name: name, Type: typ} }

func shopifyServices() []*Service {
	customer := shopifyService("customer", "Shopify customers.",
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
	)
	customer.Bare = shopifyBare(text("currency").at("amountSpent.currencyCode"), text("first_name").at("firstName"),
		text("last_name").at("lastName"), boolean("verified_email").at("verifiedEmail"))
	customer.Bare.Lowercase = []string{"state"}
	customer.Bare.Joined = map[string]string{"tags": "tags"}

	order := shopifyService("order", "Shopify orders.",
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
	)
	order.Bare = shopifyBare(none("app_id", TypeBigint), isoTime("cancelled_at").at("cancelledAt"), none("cart_token", TypeText),
		none("checkout_token", TypeText), isoTime("closed_at").at("closedAt"), text("currency").at("currencyCode"),
		bigint("customer_id").at("customer.legacyResourceId"), text("financial_status").at("displayFinancialStatus"),
		text("fulfillment_status").at("displayFulfillmentStatus"), none("order_number", TypeBigint), none("token", TypeText),
		numeric("total_price").at("totalPriceSet.shopMoney.amount"), none("user_id", TypeBigint))
	order.Bare.Lowercase = []string{"financial_status", "fulfillment_status"}

	product := shopifyService("product", "Shopify products.",
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
	)
	product.Bare = shopifyBare(text("product_type").at("productType"), isoTime("published_at").at("publishedAt"))
	product.Bare.Lowercase = []string{"status"}
	product.Bare.Joined = map[string]string{"tags": "tags"}
	return []*Service{customer, order, product}
}
