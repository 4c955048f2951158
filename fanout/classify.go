package fanout

import (
	"errors"
	"fmt"

	"github.com/jackc/pgerrcode"

	"github.com/webhookdb-go/webhookdb/internal/pgerr"
)

// Which errors of an org transaction are permanent is decided by SQLSTATE class (never by message text):
//
//	22 data exception (a value out of range for its column, bad text)      permanent: the rows that cause it fail
//	23 integrity constraint violation (a CHECK, NOT NULL or unique the org added)  permanent
//	54 program limit exceeded (an index row too large, too many columns)   permanent
//	everything else                                                        transient: parked, retried, bounded
//
// Transient includes connection errors and timeouts (no SQLSTATE, 08), 57P0x (shutdown, cannot connect now),
// 57014 (statement timeout), 53 (insufficient resources: disk full, out of memory, too many connections),
// 40001 and 40P01 (serialization failure, deadlock) and 42 (a missing table, column or privilege: the org
// database's schema or grants changed, which an operator can fix). A transient error that never clears is
// bounded too: parked changes become failed after Config.ParkedMaxAge or Config.ParkedMaxAttempts.

// rowsError is an error of the statements that write rows (the upserts and the position update): only
// those can be blamed on rows. Preparing the org database's schema or reading its position never is.
type rowsError struct{ err error }

func (e *rowsError) Error() string { return e.err.Error() }
func (e *rowsError) Unwrap() error { return e.err }

// isPermanent reports whether the org database refused rows for a reason retrying cannot fix.
func isPermanent(err error) bool {
	var re *rowsError
	if !errors.As(err, &re) {
		return false
	}
	code := pgerr.Code(err)
	if code == "" {
		return false
	}
	return pgerrcode.IsDataException(code) || pgerrcode.IsIntegrityConstraintViolation(code) || pgerrcode.IsProgramLimitExceeded(code)
}

// refusal is the reason kept with a change the org database refused permanently.
func refusal(err error) string {
	if e := pgerr.As(err); e != nil {
		// not the detail: it may quote the whole row
		return fmt.Sprintf("the org database refused it (SQLSTATE %s): %s", e.Code, e.Message)
	}
	return err.Error()
}
