"""Where a report is posted: GitHub and GitLab behind one small HTTP client."""
