package replicator

// KeptIndexes returns the indexes of the rows Dedupe keeps, in input order: the row of each remote key that
// an upsert of rows writes (webhook subscriptions notify with the source of that row).
func (s *Service) KeptIndexes(rows []Row) []int {
	keep := make(map[string]int, len(rows))
	for i, r := range rows {
		if j, seen := keep[r.Key]; !seen || s.supersedes(r, rows[j]) {
			keep[r.Key] = i
		}
	}
	out := make([]int, 0, len(keep))
	for i, r := range rows {
		if keep[r.Key] == i {
			out = append(out, i)
		}
	}
	return out
}
