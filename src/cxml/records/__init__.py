"""One typed reader and writer for each file that passes between steps."""
