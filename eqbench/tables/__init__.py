"""The seed papers' published tables beside eqbench's reproduced values (``eqbench tables``)."""
