"""Run records, leaderboard and figures."""
