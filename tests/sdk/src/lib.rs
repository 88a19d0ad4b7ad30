//! Empty on purpose: this package holds only integration tests (see tests/).
