"""Suite-wide settings: no test outcome may depend on measured time (docs/design.md,
testing layers: every test passes on a loaded machine).

Hypothesis by default fails an example that takes longer than 200 ms of wall time
(``deadline``) and a test whose data generation is slow (``HealthCheck.too_slow``): on a
busy machine both fire on tests that are correct. Examples are still bounded by
pytest-timeout, and their number by ``max_examples``; what they find does not depend on
how fast the machine is."""

from hypothesis import HealthCheck, settings

settings.register_profile("acceltcp", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("acceltcp")
