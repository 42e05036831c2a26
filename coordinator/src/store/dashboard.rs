//! Read-only queries behind the web dashboard (`crate::dashboard`): each an
//! aggregate or a page, never a full scan per refresh.

use super::Store;

impl Store {}
