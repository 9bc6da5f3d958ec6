//! What this system says to RingCentral and Gmail, and how it reads their answers.
