package api

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/webhookdb-go/webhookdb/internal/alerts"
	"github.com/webhookdb-go/webhookdb/internal/subscriptions"
)

// Webhook subscriptions and alert handlers (issue 14).

// SubscriptionEnvelope answers the single-subscription routes; Secret only on create and roll-secret.
type SubscriptionEnvelope struct {
	Subscription *subscriptions.Subscription `json:"subscription"`
	Secret       string                      `json:"secret,omitempty"`
}

// SubscriptionList answers GET /orgs/{org}/subscriptions.
type SubscriptionList struct {
	Subscriptions []*subscriptions.Subscription `json:"subscriptions"`
}

// SubscriptionDeliveryList answers GET /orgs/{org}/subscriptions/{id}/deliveries.
type SubscriptionDeliveryList struct {
	Deliveries []subscriptions.Delivery `json:"deliveries"`
}

// SubscriptionDeliveryEnvelope answers a redelivery.
type SubscriptionDeliveryEnvelope struct {
	Delivery *subscriptions.Delivery `json:"delivery"`
}

// Recovered answers a recover: how many deliveries are pending again.
type Recovered struct {
	Resent int64 `json:"resent"`
}

// AlertHandlerEnvelope answers adding an alert handler; Secret (URL handlers) is shown only then.
type AlertHandlerEnvelope struct {
	Handler *alerts.Handler `json:"handler"`
	Secret  string          `json:"secret,omitempty"`
}

// AlertHandlerList answers GET /orgs/{org}/alerts.
type AlertHandlerList struct {
	Handlers []alerts.Handler `json:"handlers"`
	// Recent are the org's latest alerts.
	Recent []alerts.Record `json:"recent"`
}

func (a *API) subs() (*subscriptions.Service, error) {
	if a.cfg.Subscriptions == nil {
		return nil, errUnavailable("webhook subscriptions are not configured on this server")
	}
	return a.cfg.Subscriptions, nil
}

func subscriptionError(err error) error {
	switch {
	case errors.Is(err, subscriptions.ErrNotFound):
		return errNotFound("subscription")
	case errors.Is(err, subscriptions.ErrInvalid):
		return errInvalid("subscription", err.Error())
	}
	return err
}

func (a *API) listSubscriptions(w http.ResponseWriter, r *http.Request) error {
	svc, err := a.subs()
	if err != nil {
		return err
	}
	list, err := svc.List(r.Context(), orgFrom(r).ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, SubscriptionList{Subscriptions: list})
	return nil
}

func (a *API) createSubscription(w http.ResponseWriter, r *http.Request) error {
	svc, err := a.subs()
	if err != nil {
		return err
	}
	var in struct {
		URL         string   `json:"url"`
		Integration string   `json:"integration_id"`
		Sources     []string `json:"sources"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	sub, secret, err := svc.Create(r.Context(), orgFrom(r).ID, subscriptions.CreateParams{URL: in.URL, Integration: in.Integration, Sources: in.Sources})
	if err != nil {
		return subscriptionError(err)
	}
	writeJSON(w, http.StatusCreated, SubscriptionEnvelope{Subscription: sub, Secret: secret})
	return nil
}

func (a *API) getSubscription(w http.ResponseWriter, r *http.Request) error {
	svc, err := a.subs()
	if err != nil {
		return err
	}
	sub, err := svc.Get(r.Context(), orgFrom(r).ID, mux.Vars(r)["id"])
	if err != nil {
		return subscriptionError(err)
	}
	writeJSON(w, http.StatusOK, SubscriptionEnvelope{Subscription: sub})
	return nil
}

func (a *API) deleteSubscription(w http.ResponseWriter, r *http.Request) error {
	svc, err := a.subs()
	if err != nil {
		return err
	}
	id := mux.Vars(r)["id"]
	if err := svc.Delete(r.Context(), orgFrom(r).ID, id); err != nil {
		return subscriptionError(err)
	}
	writeJSON(w, http.StatusOK, Deleted{Deleted: id})
	return nil
}

func (a *API) testSubscription(w http.ResponseWriter, r *http.Request) error {
	svc, err := a.subs()
	if err != nil {
		return err
	}
	res, err := svc.Test(r.Context(), orgFrom(r).ID, mux.Vars(r)["id"])
	if err != nil {
		return subscriptionError(err)
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (a *API) rollSubscriptionSecret(w http.ResponseWriter, r *http.Request) error {
	svc, err := a.subs()
	if err != nil {
		return err
	}
	var body struct {
		GracePeriod string `json:"grace_period"`
	}
	if err := decode(r, &body); err != nil {
		return err
	}
	grace, err := gracePeriod(body.GracePeriod)
	if err != nil {
		return err
	}
	sub, secret, err := svc.RollSecret(r.Context(), orgFrom(r).ID, mux.Vars(r)["id"], grace)
	if err != nil {
		return subscriptionError(err)
	}
	writeJSON(w, http.StatusOK, SubscriptionEnvelope{Subscription: sub, Secret: secret})
	return nil
}

func (a *API) listDeliveries(w http.ResponseWriter, r *http.Request) error {
	svc, err := a.subs()
	if err != nil {
		return err
	}
	q := r.URL.Query()
	p := subscriptions.ListParams{Status: q.Get("status")}
	if v := q.Get("limit"); v != "" {
		if p.Limit, err = strconv.Atoi(v); err != nil || p.Limit < 1 || p.Limit > 1000 {
			return errInvalid("limit", "a number from 1 to 1000")
		}
	}
	if v := q.Get("before"); v != "" {
		if p.Before, err = strconv.ParseInt(v, 10, 64); err != nil {
			return errInvalid("before", "a delivery id")
		}
	}
	list, err := svc.Deliveries(r.Context(), orgFrom(r).ID, mux.Vars(r)["id"], p)
	if err != nil {
		return subscriptionError(err)
	}
	writeJSON(w, http.StatusOK, SubscriptionDeliveryList{Deliveries: list})
	return nil
}

func (a *API) redeliver(w http.ResponseWriter, r *http.Request) error {
	svc, err := a.subs()
	if err != nil {
		return err
	}
	id, err := strconv.ParseInt(mux.Vars(r)["delivery"], 10, 64)
	if err != nil {
		return errNotFound("delivery")
	}
	d, err := svc.Redeliver(r.Context(), orgFrom(r).ID, id)
	if errors.Is(err, subscriptions.ErrNotFound) {
		return errNotFound("delivery")
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, SubscriptionDeliveryEnvelope{Delivery: d})
	return nil
}

func (a *API) recoverSubscription(w http.ResponseWriter, r *http.Request) error {
	svc, err := a.subs()
	if err != nil {
		return err
	}
	var body struct {
		Since *time.Time `json:"since"`
		All   bool       `json:"all"`
	}
	if err := decode(r, &body); err != nil {
		return err
	}
	if body.Since == nil && !body.All {
		return errInvalid("since", "required (RFC 3339 time), or all: true")
	}
	var since time.Time
	if body.Since != nil {
		since = *body.Since
	}
	n, err := svc.Recover(r.Context(), orgFrom(r).ID, mux.Vars(r)["id"], since, body.All)
	if err != nil {
		return subscriptionError(err)
	}
	writeJSON(w, http.StatusOK, Recovered{Resent: n})
	return nil
}

func (a *API) alertSvc() (*alerts.Service, error) {
	if a.cfg.Alerts == nil {
		return nil, errUnavailable("alerts are not configured on this server")
	}
	return a.cfg.Alerts, nil
}

func (a *API) listAlertHandlers(w http.ResponseWriter, r *http.Request) error {
	svc, err := a.alertSvc()
	if err != nil {
		return err
	}
	hs, err := svc.ListHandlers(r.Context(), orgFrom(r).ID)
	if err != nil {
		return err
	}
	recent, err := svc.List(r.Context(), orgFrom(r).ID, 20)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, AlertHandlerList{Handlers: hs, Recent: recent})
	return nil
}

func (a *API) addAlertHandler(w http.ResponseWriter, r *http.Request) error {
	svc, err := a.alertSvc()
	if err != nil {
		return err
	}
	var in struct {
		Target string `json:"target"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	h, secret, err := svc.AddHandler(r.Context(), orgFrom(r).ID, in.Target)
	if errors.Is(err, alerts.ErrInvalid) {
		return errInvalid("target", err.Error())
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, AlertHandlerEnvelope{Handler: h, Secret: secret})
	return nil
}

func (a *API) removeAlertHandler(w http.ResponseWriter, r *http.Request) error {
	svc, err := a.alertSvc()
	if err != nil {
		return err
	}
	id := mux.Vars(r)["id"]
	if err := svc.RemoveHandler(r.Context(), orgFrom(r).ID, id); errors.Is(err, alerts.ErrNotFound) {
		return errNotFound("alert handler")
	} else if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, Removed{Removed: id})
	return nil
}

// gracePeriod reads a roll-secret's grace_period: default 24h, at most 720h.
func gracePeriod(v string) (time.Duration, error) {
	if v == "" {
		return 24 * time.Hour, nil
	}
	grace, err := time.ParseDuration(v)
	if err != nil || grace < 0 || grace > 30*24*time.Hour {
		return 0, errInvalid("grace_period", "a duration such as 24h, at most 720h")
	}
	return grace, nil
}
