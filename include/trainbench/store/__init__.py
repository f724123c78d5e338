"""Where results live: the results database (`results`, with its Alembic `migrations`), each run's folder
of raw JSON (`run_folder`), and hand-made logs loaded as results (`imported_logs`)."""
