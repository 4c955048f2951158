package orgdb_test

import "time"

func secondsDuration(n int) time.Duration { return time.Duration(n) * time.Second }
