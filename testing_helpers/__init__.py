"""Helpers shared by tests/ and benchmarks/, outside the shipped packages (no module of
pounce_kkt, pounce_cvxpy or pounce_theseus imports them; tests/test_package_boundaries.py).

- conic_problems: random conic problems in SCS form built around a known solution, the
  suite of cone families, infeasible and unbounded variants, linear cone programs.
- cone_pairs: complementary (s, y) pairs per cone, on chosen faces.
- svec: SCS's packed symmetric matrices.
- reference_solvers: Clarabel directly and through cvxpy; closed-form sparsemax.
- compare: error measures.
- native_calls: a keyword dict of structure and values as a native ConicProblem call.
- cvxpy_problems: small DPP problems, one per cone cvxpy emits.
- theseus_problems: Theseus problems and finite-difference helpers.
"""
