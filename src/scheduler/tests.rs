//! Scenario and property tests.
