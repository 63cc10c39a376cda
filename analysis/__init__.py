"""What scientists take away: embeddings, clusterings and evaluations."""
