//! rank-launch library (placeholder).
