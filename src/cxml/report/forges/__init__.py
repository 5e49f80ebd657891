"""Where a report is posted: one `Forge` interface, GitHub and GitLab over one small HTTP client."""
