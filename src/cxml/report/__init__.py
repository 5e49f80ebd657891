"""The report: its data model, markdown, charts, and the forges (GitHub, GitLab) that post it."""
