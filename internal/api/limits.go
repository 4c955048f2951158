package api

import (
	"fmt"
	"math"
	"net/http"
	"time"
)

// errRateLimited answers 429 with the wait in Retry-After.
func errRateLimited(what string, wait time.Duration) *Error {
	secs := int(math.Ceil(wait.Seconds()))
	return &Error{Status: http.StatusTooManyRequests, Code: "rate_limited", RetryAfter: wait,
		Message: fmt.Sprintf("%s: try again in %d s", what, secs)}
}
