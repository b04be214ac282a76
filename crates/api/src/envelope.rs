//! Response envelopes: `{"data": ...}` for one resource, `{data, count, next, previous}` for a
//! list, and the pagination parameters every list takes.

use serde::Serialize;
use waybill_domain::ValidationErrors;
use waybill_runtime::body::parse_int;

/// `{"data": ...}`.
#[derive(Debug, Serialize)]
pub struct One<T> {
    pub data: T,
}

/// A page of a list.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
}

/// Highest page accepted: far past any real list, low enough that the offset cannot overflow.
const MAX_PAGE: i64 = i64::MAX / 1024;

/// `limit` and `page` of a list request.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    pub limit: i64,
    pub page: i64,
}

impl Paging {
    /// Reads `limit` (1..=max, default `default`) and `page` (≥ 1) from query pairs.
    pub fn parse(
        pairs: &[(String, String)],
        default: i64,
        max: i64,
        errors: &mut ValidationErrors,
    ) -> Paging {
        let mut p = Paging {
            limit: default,
            page: 1,
        };
        for (k, v) in pairs {
            match k.as_str() {
                "limit" => p.limit = parse_int("limit", v, 1, max, errors).unwrap_or(default),
                "page" => p.page = parse_int("page", v, 1, MAX_PAGE, errors).unwrap_or(1),
                _ => {}
            }
        }
        p
    }

    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.limit
    }

    /// Builds the page with `next`/`previous` links that repeat the other query parameters.
    pub fn page<T>(
        &self,
        path: &str,
        pairs: &[(String, String)],
        data: Vec<T>,
        count: i64,
    ) -> Page<T> {
        let link = |page: i64| {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs.iter().filter(|(k, _)| k != "page") {
                q.append_pair(k, v);
            }
            q.append_pair("page", &page.to_string());
            format!("{path}?{}", q.finish())
        };
        let shown = self.offset() + data.len() as i64;
        let last_page = ((count + self.limit - 1) / self.limit).max(1);
        Page {
            next: (shown < count && !data.is_empty()).then(|| link(self.page + 1)),
            previous: (self.page > 1).then(|| link((self.page - 1).min(last_page))),
            data,
            count,
        }
    }
}
