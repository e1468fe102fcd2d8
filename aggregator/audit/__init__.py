"""``fedgate audit``: privacy, provenance and fairness of a model version."""
