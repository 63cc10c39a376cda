"""What scientists take away: embeddings, clusterings, evaluations, diagnostics, exports and
figures (``embed``, ``cluster``, ``evaluate``, ``diagnostics``, ``export``, ``plots``)."""
