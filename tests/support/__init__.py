"""Helpers of the test suite only: fixtures and throwaway servers, repositories and databases
(what benchmarks and scripts share with the tests lives in `devtools/`)."""
