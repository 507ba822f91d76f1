//! Mapping between the SCS/cvxpy conic layout and POUNCE's.
