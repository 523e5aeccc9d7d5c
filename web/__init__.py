"""The web side: arena, leaderboard, admin dashboard, health and Prometheus metrics (FastAPI)."""
