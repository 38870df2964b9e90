//! launch-gen library (placeholder).
