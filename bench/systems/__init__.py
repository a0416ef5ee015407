"""The systems the benchmark measures: the interface (``base``), the shared client loops
(``workloads``), qhive and Django Q2 (``djangoq``) and the peers (``peers/``)."""
