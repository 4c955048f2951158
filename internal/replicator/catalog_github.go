package replicator

// GitHub resources are keyed by their numeric id, as text: it is what both webhooks and the REST API return,
// and unlike node_id it did not change format when GitHub migrated its global ids. The event name comes from
// the X-GitHub-Event header; the resource sits under a key named after it.

func githubService(event, resource, name, description string, policy ConflictPolicy, cols ...Column) *Service {
	s := &Service{
		Name:        "github_" + name + "_v1",
		Description: description,
		Verifier:    VerifierGitHub,
		Events:      EventFilter{Header: "X-GitHub-Event", Equals: []string{event}},
		Resource:    resource,
		RemoteKey:   key("github_id", "id"),
		Columns:     cols,
		Policy:      policy,
		// The REST API's objects are the webhook's resources, with their own updated_at.
		Bare: &BareObject{},
	}
	if policy == NewerWins {
		s.TimestampColumn = "updated_at"
	}
	return s
}

func githubServices() []*Service {
	release := githubService("release", "release", "release", "GitHub releases (release events).", DataChanged,
		text("author_login").at("author.login"),
		isoTime("created_at"),
		boolean("draft"),
		text("html_url"),
		text("name"),
		text("node_id"),
		boolean("prerelease"),
		isoTime("published_at"),
		text("repository_full_name").at("repository.full_name").fromEvent().indexed(),
		text("tag_name"),
		text("target_commitish"),
	)
	// A listed release does not name its repository: the backfill client puts it beside, as the event does.
	release.Bare.Resource = "release"
	return []*Service{
		githubService("issues", "issue", "issue", "GitHub issues (issues events).", NewerWins,
			isoTime("closed_at"),
			integer("comments"),
			isoTime("created_at"),
			text("html_url"),
			boolean("locked"),
			text("node_id"),
			bigint("number"),
			text("repository_url").indexed(),
			text("state"),
			text("state_reason"),
			text("title"),
			isoTime("updated_at"),
			text("user_login").at("user.login").indexed(),
		),
		githubService("issue_comment", "comment", "issue_comment", "GitHub issue and pull request comments (issue_comment events).", NewerWins,
			text("author_association"),
			text("body"),
			isoTime("created_at"),
			text("html_url"),
			text("issue_url").indexed(),
			text("node_id"),
			isoTime("updated_at"),
			text("user_login").at("user.login").indexed(),
		),
		githubService("pull_request", "pull_request", "pull", "GitHub pull requests (pull_request events).", NewerWins,
			text("base_ref").at("base.ref"),
			isoTime("closed_at"),
			isoTime("created_at"),
			boolean("draft"),
			text("head_ref").at("head.ref"),
			text("head_sha").at("head.sha"),
			text("html_url"),
			text("merge_commit_sha"),
			boolean("merged"),
			isoTime("merged_at"),
			text("node_id"),
			bigint("number"),
			text("repository_full_name").at("base.repo.full_name").indexed(),
			text("state"),
			text("title"),
			isoTime("updated_at"),
			text("user_login").at("user.login").indexed(),
		),
		// Releases have no updated_at: an edit only shows in the data.
		release,
	}
}
