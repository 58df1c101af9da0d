//! loopd engine (work in progress).
