//! Payload filters: the conditions a subscription puts on an event's body, beyond its type and
//! client. A filter is parsed once, where it enters (the api's request body, the dispatcher's
//! change feed), into a [`Filter`]: paths split into segments, operands type-checked, regexes
//! compiled. What runs per event is [`Filter::matches`] on a [`Body`], the view of the exact body
//! a receiver would get (`{"id", "type", "timestamp", "client_id", "data"}`).
//!
//! The language:
//!
//! ```text
//! filter     := { key: value, ... }              every key must hold (AND); 1 or more keys
//! key        := path | "$and" | "$or" | "$not"
//! path       := root ("." segment)*              root: id, type, timestamp, client_id, data
//!                                                (only data has segments below it)
//! "$and"/"$or" : [filter, ...]                   1 to 20 filters
//! "$not"     : filter
//! value      := JSON (compared for equality) | { "$op": operand, ... } (every operator holds)
//! ```
//!
//! A numeric segment indexes an array (`data.lines.0.sku`); any other segment that meets an
//! array goes on into every element, and where a path ends on an array, the array and each of
//! its elements are values it reached. A condition holds when it holds for **any** value reached;
//! `$neq` and `$nin` are the negations of `$eq` and `$in` (no value reached is equal), so they,
//! `$exists: false` and `$not` hold where a path reaches nothing, and every other condition
//! does not.
//!
//! Cost: walking one path visits each node of the body at most once (a segment either goes one
//! level down or fans out over an array's elements, never back), regexes run on the `regex`
//! crate's engines, linear in the string, and every operand is bounded (4 KiB in all), so one
//! evaluation is at most [`MAX_CONDITIONS`] walks: linear in the size of the event, whatever the
//! filter. Across the many filters evaluated on one event, a [`Body`] remembers what each path
//! reached (paths are shared by address between filters), and a condition that several filters
//! have (the same operator and operand on the same path: a tenant's subscriptions name the same
//! few fields and values) is held once in the process and decided once per event.

use std::{
    cell::{OnceCell, RefCell},
    cmp::Ordering,
    collections::HashMap,
    fmt,
    hash::{BuildHasherDefault, Hasher},
    sync::{Arc, Mutex, OnceLock, Weak},
};

use chrono::{DateTime, Utc};
use regex_automata::meta::{self, Regex};
use serde::{Serialize, Serializer};
use serde_json::{Map, Number, Value};

use crate::event::EventEnvelope;

/// Largest filter, as compact JSON.
pub const MAX_FILTER_BYTES: usize = 4096;
/// Deepest nesting of filter objects (the filter itself is level 1; each `$and`/`$or` element
/// and each `$not` goes one level down).
pub const MAX_DEPTH: usize = 8;
/// Most conditions in one filter; a condition is one operator (or one plain value) on a path.
pub const MAX_CONDITIONS: usize = 64;
/// Most values of one `$in` or `$nin`.
pub const MAX_SET_VALUES: usize = 256;
/// Longest `$regex`, in characters.
pub const MAX_REGEX_CHARS: usize = 256;
/// Most filters in one `$and` or `$or`.
pub const MAX_BRANCHES: usize = 20;
/// Most memory the compiled `$regex`es of one filter take together, in bytes; a pattern that
/// would go over is refused. Bounding the programs bounds what each subscription holds, and the
/// work per byte of text when the engine falls back from its lazy DFA to its NFA simulation.
/// (One `\w` takes about 57 KB in Unicode mode; `(?-u:\w)` a few hundred bytes.)
pub const REGEX_BUDGET: usize = 128 * 1024;
/// Memory one `$regex`'s lazy DFA may use per thread before it falls back to its (also linear)
/// NFA simulation.
const REGEX_DFA_LIMIT: usize = 256 * 1024;

/// The operators, as a path's value object takes them.
pub const OPERATORS: &[&str] = &[
    "$eq",
    "$neq",
    "$in",
    "$nin",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$exists",
    "$regex",
    "$startsWith",
    "$endsWith",
    "$contains",
];

/// The top-level fields of the body a receiver gets, where every path starts.
pub const ROOTS: &[&str] = &["id", "type", "timestamp", "client_id", "data"];

/// Why a filter is refused: where in it (`filter.$or[1].data.qty`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {message}")]
pub struct FilterError {
    pub place: String,
    pub message: String,
}

fn refuse<T>(place: &str, message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError {
        place: place.to_owned(),
        message: message.into(),
    })
}

/// A checked, compiled filter. Equal filters are the ones of equal JSON.
#[derive(Clone)]
pub struct Filter {
    root: Node,
    source: Value,
    conditions: usize,
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Filter").field(&self.source).finish()
    }
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

// JSON read from text holds no NaN, so its equality is an equivalence.
impl Eq for Filter {}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.source.serialize(s)
    }
}

impl Filter {
    /// Checks `value` against every rule and limit and compiles it.
    pub fn parse(value: &Value) -> Result<Filter, FilterError> {
        let Value::Object(map) = value else {
            return refuse("filter", "must be an object");
        };
        // Writing a parsed value back out cannot fail; were it to, the size is unknown and
        // the filter is refused rather than let through.
        if let Some(place) = nul_in(value, "filter") {
            // Postgres cannot store it in jsonb (and event data cannot hold it either).
            return refuse(&place, "must not contain the NUL character (\\u0000)");
        }
        let size = serde_json::to_vec(value).map_or(usize::MAX, |v| v.len());
        if size > MAX_FILTER_BYTES {
            return refuse(
                "filter",
                format!("is {size} bytes as JSON; at most {MAX_FILTER_BYTES}"),
            );
        }
        let mut tally = Tally::default();
        let root = parse_filter(map, "filter", 1, &mut tally)?;
        let conditions = tally.conditions;
        if conditions > MAX_CONDITIONS {
            return refuse(
                "filter",
                format!(
                    "has {conditions} conditions; at most {MAX_CONDITIONS} (each operator or plain value on a path is one)"
                ),
            );
        }
        Ok(Filter {
            root,
            source: value.clone(),
            conditions,
        })
    }

    /// The filter as it was sent.
    pub fn as_json(&self) -> &Value {
        &self.source
    }

    /// How many conditions it has.
    pub fn conditions(&self) -> usize {
        self.conditions
    }

    /// Whether an event with this body passes.
    pub fn matches(&self, body: &Body<'_>) -> bool {
        self.root.holds(body)
    }

    /// The ids of up to [`SHORTCUT_IDS`] of the conditions that must all hold (the top level's),
    /// those other filters share first, for [`Body::known`].
    pub fn shortcut(&self) -> Shortcut {
        let top: Vec<&Arc<Condition>> = match &self.root {
            Node::Condition(c) => vec![c],
            Node::All(nodes) => nodes
                .iter()
                .filter_map(|n| match n {
                    Node::Condition(c) => Some(c),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let every = match &self.root {
            Node::Condition(_) => true,
            Node::All(nodes) => top.len() == nodes.len(),
            _ => false,
        };
        let mut ranked = top;
        // Shared conditions are the ones an event's memo is likely to know already.
        // Each count read once: other threads change them while this sorts.
        ranked.sort_by_cached_key(|c| std::cmp::Reverse(Arc::strong_count(c) > 1));
        let mut out = Shortcut {
            complete: every && ranked.len() <= SHORTCUT_IDS,
            ..Shortcut::default()
        };
        for (slot, c) in out.ids.iter_mut().zip(&ranked) {
            *slot = c.id;
            out.len += 1;
        }
        out
    }
}

/// Most condition ids a [`Shortcut`] carries.
pub const SHORTCUT_IDS: usize = 4;

/// Some conditions a filter needs, by id: enough for an index to turn most candidates away from
/// what the event already decided, without reading the filter itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shortcut {
    ids: [u64; SHORTCUT_IDS],
    len: u8,
    /// The ids are all the filter is: every one known true means the filter holds.
    complete: bool,
}

/// The body a receiver gets for an event, as filters read it. Built once per event and shared
/// by every filter evaluated on it: what a path below `data` reaches is looked up once per event
/// and remembered for the other filters naming the same path (most of a tenant's filters name
/// the same few fields), and `timestamp` is written out only if a filter reads it.
pub struct Body<'a> {
    id: Value,
    kind: Value,
    client_id: Value,
    hashes: [u64; 3],
    occurred_at: DateTime<Utc>,
    timestamp: OnceCell<(Value, u64)>,
    data: &'a Map<String, Value>,
    whole_data: OnceCell<Value>,
    reached: RefCell<Memo<'a>>,
    remembered: std::cell::Cell<usize>,
    /// What each shared condition came to, by its id.
    decided: RefCell<HashMap<u64, bool, BuildHasherDefault<Mix>>>,
}

/// A value a path reached, with the hash of its text when it is a string, so that comparing it
/// with a filter's strings mostly needs no look at their bytes.
#[derive(Clone, Copy)]
struct Reached<'v> {
    value: &'v Value,
    hash: u64,
}

impl<'v> Reached<'v> {
    fn new(value: &'v Value) -> Self {
        let hash = value.as_str().map_or(0, text_hash);
        Reached { value, hash }
    }
}

/// Most paths one event remembers, and most values it keeps for them in all; paths beyond are
/// walked each time (still linear), so what one event holds stays bounded whatever the filters.
const MEMO_PATHS: usize = 1024;
const MEMO_VALUES: usize = 64 * 1024;
/// Most shared conditions one event remembers the answer of.
const MEMO_DECIDED: usize = 64 * 1024;

/// What each path reached, by the path's hash; entries of equal hash are told apart by text.
type Memo<'a> = HashMap<u64, Vec<(Arc<str>, Vec<Reached<'a>>)>, BuildHasherDefault<PassThrough>>;

/// A hasher for keys that are hashes already.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Values shared by every filter alive in this process that has them: path texts, so that an
/// event's memo recognises a path by its address, and whole conditions, so that a condition many
/// subscriptions have is held once and decided once per event. Entries are found by the hash of
/// a key and told apart by the key; those of dropped filters are swept whenever the table has
/// doubled since the last sweep.
struct Interner<T: ?Sized> {
    by_hash: HashMap<u64, Vec<Interned<T>>>,
    entries: usize,
    swept_at: usize,
}

/// An interned value by its key.
type Interned<T> = (Box<str>, Weak<T>);

impl<T: ?Sized> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            by_hash: HashMap::new(),
            entries: 0,
            swept_at: 0,
        }
    }
}

impl<T: ?Sized> Interner<T> {
    fn find(&self, key: &str, hash: u64) -> Option<Arc<T>> {
        self.by_hash.get(&hash).and_then(|entries| {
            entries
                .iter()
                .find(|(k, _)| **k == *key)
                .and_then(|(_, w)| w.upgrade())
        })
    }

    fn insert(&mut self, key: &str, hash: u64, value: &Arc<T>) {
        let entries = self.by_hash.entry(hash).or_default();
        // A dead entry of the same key gives way.
        entries.retain(|(k, w)| **k != *key && w.strong_count() > 0);
        entries.push((key.into(), Arc::downgrade(value)));
        self.entries += 1;
        if self.entries > 2 * self.swept_at.max(512) {
            self.by_hash.retain(|_, entries| {
                entries.retain(|(_, w)| w.strong_count() > 0);
                !entries.is_empty()
            });
            self.entries = self.by_hash.values().map(Vec::len).sum();
            self.swept_at = self.entries;
        }
    }
}

fn locked<T: ?Sized>(
    table: &'static OnceLock<Mutex<Interner<T>>>,
) -> std::sync::MutexGuard<'static, Interner<T>> {
    // A poisoned table still holds valid entries; at worst a value is not shared.
    table
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

static PATH_TEXTS: OnceLock<Mutex<Interner<str>>> = OnceLock::new();
static CONDITIONS: OnceLock<Mutex<Interner<Condition>>> = OnceLock::new();

fn intern(text: &str, hash: u64) -> Arc<str> {
    let mut t = locked(&PATH_TEXTS);
    if let Some(found) = t.find(text, hash) {
        return found;
    }
    let fresh: Arc<str> = text.into();
    t.insert(text, hash, &fresh);
    fresh
}

/// A hasher for integer keys without structure in their low bits (ids count up by one).
#[derive(Default)]
struct Mix(u64);

impl Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// FNV-1a of a text: of a path when a filter is parsed, of a string value once per event.
fn text_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl<'a> Body<'a> {
    /// The body of the request delivering `event`.
    pub fn of(event: &'a EventEnvelope) -> Body<'a> {
        let client = event.client_id.as_deref();
        Body {
            hashes: [
                text_hash(&event.id),
                text_hash(event.kind.as_str()),
                client.map_or(0, text_hash),
            ],
            id: Value::String(event.id.clone()),
            kind: Value::String(event.kind.as_str().to_owned()),
            client_id: event
                .client_id
                .as_ref()
                .map_or(Value::Null, |c| Value::String(c.clone())),
            occurred_at: event.occurred_at,
            timestamp: OnceCell::new(),
            data: &event.data,
            whole_data: OnceCell::new(),
            reached: RefCell::new(Memo::default()),
            remembered: std::cell::Cell::new(0),
            decided: RefCell::default(),
        }
    }

    /// What the filter of `shortcut` comes to, if this event's answers for shared conditions
    /// already settle it: one of its conditions known false, or all of them known true.
    /// `None`: evaluate it. Only an answer the filter itself would give.
    pub fn known(&self, shortcut: &Shortcut) -> Option<bool> {
        if shortcut.len == 0 {
            return None;
        }
        let decided = self.decided.borrow();
        if decided.is_empty() {
            return None;
        }
        let mut all = shortcut.complete;
        for id in &shortcut.ids[..usize::from(shortcut.len)] {
            match decided.get(id) {
                Some(false) => return Some(false),
                Some(true) => {}
                None => all = false,
            }
        }
        all.then_some(true)
    }

    fn timestamp(&self) -> Reached<'_> {
        // The same text the receiver's body carries (see `delivery::receiver_body`).
        let (value, hash) = self.timestamp.get_or_init(|| {
            let v = serde_json::to_value(self.occurred_at)
                .unwrap_or_else(|_| Value::String(self.occurred_at.to_rfc3339()));
            let h = v.as_str().map_or(0, text_hash);
            (v, h)
        });
        Reached { value, hash: *hash }
    }
}

/// Where a path starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Id,
    Type,
    Timestamp,
    ClientId,
    Data,
}

/// One step of a path below `data`.
#[derive(Debug, Clone)]
struct Segment {
    key: Box<str>,
    /// Set when the segment is a number: the element it picks when it meets an array.
    index: Option<usize>,
}

#[derive(Debug, Clone)]
struct Path {
    root: Root,
    rest: Box<[Segment]>,
    text: Arc<str>,
    hash: u64,
}

#[derive(Debug, Clone)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Condition(Arc<Condition>),
}

/// One operator (or plain value) on one path; shared by every filter alive that has it.
#[derive(Debug)]
struct Condition {
    /// Never reused in this process, so an event's memo can key its answers by it.
    id: u64,
    path: Path,
    test: Test,
}

/// What a condition asks of a value its path reached.
#[derive(Debug, Clone)]
enum Test {
    /// `$eq` and plain values (one member), `$in`.
    In(Set),
    /// `$neq` (one member), `$nin`.
    Nin(Set),
    /// The value's order against the operand must be one of these.
    Compare(Bound, [bool; 3]),
    Exists(bool),
    Regex(Regex),
    StartsWith(String),
    EndsWith(String),
    Contains(Value),
}

/// Where in `value` a key or string holds the NUL character, if anywhere.
fn nul_in(value: &Value, place: &str) -> Option<String> {
    match value {
        Value::String(s) if s.contains('\0') => Some(place.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_in(v, &format!("{place}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(place.to_owned())
            } else {
                nul_in(v, &format!("{place}.{k}"))
            }
        }),
        _ => None,
    }
}

/// What a filter has used of its limits so far, while it is parsed.
#[derive(Default)]
struct Tally {
    conditions: usize,
    regex_bytes: usize,
}

fn parse_filter(
    map: &Map<String, Value>,
    place: &str,
    depth: usize,
    tally: &mut Tally,
) -> Result<Node, FilterError> {
    if depth > MAX_DEPTH {
        return refuse(place, format!("nests deeper than {MAX_DEPTH} levels"));
    }
    if map.is_empty() {
        return refuse(place, "has no condition; a filter needs at least one key");
    }
    let mut all = Vec::with_capacity(map.len());
    for (key, value) in map {
        let node = match key.as_str() {
            "$and" | "$or" => {
                let here = format!("{place}.{key}");
                let branches = match value {
                    Value::Array(items) if (1..=MAX_BRANCHES).contains(&items.len()) => items,
                    _ => {
                        return refuse(
                            &here,
                            format!("{key} needs an array of 1 to {MAX_BRANCHES} filters"),
                        );
                    }
                };
                let mut nodes = Vec::with_capacity(branches.len());
                for (i, branch) in branches.iter().enumerate() {
                    let at = format!("{here}[{i}]");
                    let Value::Object(m) = branch else {
                        return refuse(&at, "must be a filter object");
                    };
                    nodes.push(parse_filter(m, &at, depth + 1, tally)?);
                }
                if key == "$and" {
                    Node::All(nodes)
                } else {
                    Node::Any(nodes)
                }
            }
            "$not" => {
                let at = format!("{place}.$not");
                let Value::Object(m) = value else {
                    return refuse(&at, "$not needs a filter object");
                };
                Node::Not(Box::new(parse_filter(m, &at, depth + 1, tally)?))
            }
            k if OPERATORS.contains(&k) => {
                return refuse(
                    place,
                    format!(
                        "{k} is an operator and needs a path, as in {{\"data.status\": {{\"{k}\": ...}}}}"
                    ),
                );
            }
            k if k.starts_with('$') => {
                return refuse(
                    place,
                    format!("unknown combinator `{k}`; a key is a path or one of $and, $or, $not"),
                );
            }
            path => {
                let at = format!("{place}.{path}");
                let path = parse_path(path).or_else(|m| refuse(&at, m))?;
                parse_conditions(path, value, &at, tally)?
            }
        };
        all.push(node);
    }
    Ok(if all.len() == 1 {
        all.swap_remove(0)
    } else {
        Node::All(all)
    })
}

fn parse_path(raw: &str) -> Result<Path, String> {
    let mut parts = raw.split('.');
    let first = parts.next().unwrap_or_default();
    let root = match first {
        "id" => Root::Id,
        "type" => Root::Type,
        "timestamp" => Root::Timestamp,
        "client_id" => Root::ClientId,
        "data" => Root::Data,
        _ => {
            return Err(format!(
                "a path starts with one of {} (the body the receiver gets)",
                ROOTS.join(", ")
            ));
        }
    };
    let rest: Vec<Segment> = parts
        .map(|p| {
            if p.is_empty() {
                return Err("a path is keys separated by single dots, none of them empty".into());
            }
            // Digits without a leading zero index an array (a number too big to count reaches
            // past any array's end); `01` is a key like any other.
            let index = (p.bytes().all(|b| b.is_ascii_digit())
                && (p == "0" || !p.starts_with('0')))
            .then(|| p.parse::<usize>().unwrap_or(usize::MAX));
            Ok(Segment {
                key: p.into(),
                index,
            })
        })
        .collect::<Result<_, String>>()?;
    if root != Root::Data && !rest.is_empty() {
        let what = if root == Root::ClientId {
            "a string or null"
        } else {
            "a string"
        };
        return Err(format!("`{first}` is {what}; a path cannot go below it"));
    }
    Ok(Path {
        root,
        rest: rest.into(),
        text: intern(raw, text_hash(raw)),
        hash: text_hash(raw),
    })
}

/// The conditions of one path: a plain value (equality) or an object of operators.
fn parse_conditions(
    path: Path,
    value: &Value,
    place: &str,
    tally: &mut Tally,
) -> Result<Node, FilterError> {
    let ops = match value {
        Value::Object(m) if m.keys().any(|k| k.starts_with('$')) => m,
        _ => {
            tally.conditions += 1;
            return condition(&path, "$eq", value, place, tally);
        }
    };
    if let Some(plain) = ops.keys().find(|k| !k.starts_with('$')) {
        return refuse(
            place,
            format!(
                "mixes operators with the plain key `{plain}`; an operator object takes only `$` keys (compare with such an object through $eq)"
            ),
        );
    }
    let mut all = Vec::with_capacity(ops.len());
    for (op, operand) in ops {
        tally.conditions += 1;
        all.push(condition(&path, op, operand, place, tally)?);
    }
    Ok(if all.len() == 1 {
        all.swap_remove(0)
    } else {
        Node::All(all)
    })
}

/// The condition `op` `operand` on `path`: the one other filters share when there is one, else
/// checked, compiled and shared from now on.
fn condition(
    path: &Path,
    op: &str,
    operand: &Value,
    place: &str,
    tally: &mut Tally,
) -> Result<Node, FilterError> {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    // An operator is known before it is looked up, so only a valid condition is ever shared;
    // the lengths keep path and operator apart whatever characters they hold.
    if !OPERATORS.contains(&op) {
        return parse_test(op, operand, place, tally)
            .and_then(|_| refuse(place, format!("unknown operator `{op}`")));
    }
    let key = format!(
        "{}:{}{}:{op}{operand}",
        path.text.len(),
        path.text,
        op.len()
    );
    let hash = text_hash(&key);
    let known = locked(&CONDITIONS).find(&key, hash);
    let shared = match known {
        Some(c) => {
            // Shared or not, its regex counts against this filter's budget.
            if let Test::Regex(re) = &c.test {
                let used = tally.regex_bytes + re.memory_usage();
                if used > REGEX_BUDGET {
                    return refuse(place, regex_too_big(tally.regex_bytes > 0));
                }
                tally.regex_bytes = used;
            }
            c
        }
        None => {
            let test = parse_test(op, operand, place, tally)?;
            let fresh = Arc::new(Condition {
                id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                path: path.clone(),
                test,
            });
            let mut table = locked(&CONDITIONS);
            // Another thread may have put the same one in meanwhile; either is right.
            match table.find(&key, hash) {
                Some(c) => c,
                None => {
                    table.insert(&key, hash, &fresh);
                    fresh
                }
            }
        }
    };
    Ok(Node::Condition(shared))
}

fn parse_test(
    op: &str,
    operand: &Value,
    place: &str,
    tally: &mut Tally,
) -> Result<Test, FilterError> {
    let string = |what: &str| match operand {
        Value::String(s) => Ok(s.clone()),
        _ => refuse(place, format!("{op} needs {what}")),
    };
    Ok(match op {
        "$eq" => Test::In(Set::of(std::slice::from_ref(operand))),
        "$neq" => Test::Nin(Set::of(std::slice::from_ref(operand))),
        "$in" | "$nin" => {
            let Value::Array(values) = operand else {
                return refuse(place, format!("{op} needs an array of values"));
            };
            if values.is_empty() || values.len() > MAX_SET_VALUES {
                return refuse(
                    place,
                    format!(
                        "{op} needs 1 to {MAX_SET_VALUES} values; it has {}",
                        values.len()
                    ),
                );
            }
            if op == "$in" {
                Test::In(Set::of(values))
            } else {
                Test::Nin(Set::of(values))
            }
        }
        "$gt" | "$gte" | "$lt" | "$lte" => {
            if !matches!(operand, Value::Number(_) | Value::String(_)) {
                return refuse(place, format!("{op} needs a number or a string"));
            }
            // [less, equal, greater]: which orders of value against operand pass.
            let wanted = match op {
                "$gt" => [false, false, true],
                "$gte" => [false, true, true],
                "$lt" => [true, false, false],
                _ => [true, true, false],
            };
            let bound = match operand {
                Value::Number(n) => Bound::Number(n.clone()),
                Value::String(s) => match DateTime::parse_from_rfc3339(s) {
                    Ok(t) => Bound::Time(t.with_timezone(&Utc), s.as_str().into()),
                    Err(_) => Bound::Text(s.as_str().into()),
                },
                _ => return refuse(place, format!("{op} needs a number or a string")),
            };
            Test::Compare(bound, wanted)
        }
        "$exists" => match operand {
            Value::Bool(b) => Test::Exists(*b),
            _ => return refuse(place, "$exists needs true or false"),
        },
        "$regex" => {
            let pattern = string("a string")?;
            let chars = pattern.chars().count();
            if chars > MAX_REGEX_CHARS {
                return refuse(
                    place,
                    format!("$regex is {chars} characters; at most {MAX_REGEX_CHARS}"),
                );
            }
            let left = REGEX_BUDGET.saturating_sub(tally.regex_bytes);
            let re =
                compile(&pattern, left, tally.regex_bytes > 0).or_else(|m| refuse(place, m))?;
            tally.regex_bytes += re.memory_usage();
            Test::Regex(re)
        }
        "$startsWith" => Test::StartsWith(string("a string")?),
        "$endsWith" => Test::EndsWith(string("a string")?),
        "$contains" => Test::Contains(operand.clone()),
        _ => {
            return refuse(
                place,
                format!(
                    "unknown operator `{op}`; operators are {}",
                    OPERATORS.join(", ")
                ),
            );
        }
    })
}

/// Compiles `pattern` as the `regex` crate would (same syntax and engines), within `budget`
/// bytes of memory; `shared` says whether other regexes of the filter took some already.
/// Why a regex over the budget is refused; `shared` when other regexes of the filter took
/// some of it.
fn regex_too_big(shared: bool) -> String {
    const HINT: &str = "Unicode classes such as \\w, \\d or . repeated are large; [A-Za-z0-9_], [0-9] or (?-u:\\w) are small";
    if shared {
        format!(
            "$regex is too large once compiled: the regexes of one filter may take {REGEX_BUDGET} bytes in all; simplify them ({HINT})"
        )
    } else {
        format!(
            "$regex is too large once compiled (over {REGEX_BUDGET} bytes); simplify it ({HINT})"
        )
    }
}

fn compile(pattern: &str, budget: usize, shared: bool) -> Result<Regex, String> {
    let too_big = || regex_too_big(shared);
    let re = Regex::builder()
        .configure(
            meta::Config::new()
                .nfa_size_limit(Some(budget))
                .hybrid_cache_capacity(REGEX_DFA_LIMIT),
        )
        .build(pattern)
        .map_err(|e| {
            if e.size_limit().is_some() {
                too_big()
            } else if let Some(syntax) = e.syntax_error() {
                // The parser's text shows the pattern with a caret over several lines; its
                // last line says what is wrong.
                let text = syntax.to_string();
                let why = text
                    .lines()
                    .rev()
                    .find_map(|l| l.strip_prefix("error: "))
                    .unwrap_or("it does not parse")
                    .to_owned();
                format!("$regex is not a valid pattern: {why}")
            } else {
                format!("$regex is not a valid pattern: {e}")
            }
        })?;
    if re.memory_usage() > budget {
        return Err(too_big());
    }
    Ok(re)
}

/// The operand of `$gt`, `$gte`, `$lt`, `$lte`. A string that is an RFC 3339 time compares as a
/// time with values that are too (the receiver's `timestamp` has 0 to 9 fraction digits, which
/// code-point order would misplace within a second), else by code point.
#[derive(Debug, Clone)]
enum Bound {
    Number(Number),
    Text(Box<str>),
    Time(DateTime<Utc>, Box<str>),
}

impl Bound {
    fn order(&self, value: &Value) -> Option<Ordering> {
        match (value, self) {
            (Value::Number(a), Bound::Number(b)) => compare_numbers(a, b),
            (Value::String(a), Bound::Text(b)) => Some(a.as_str().cmp(b)),
            (Value::String(a), Bound::Time(t, text)) => match DateTime::parse_from_rfc3339(a) {
                Ok(v) => Some(v.with_timezone(&Utc).cmp(t)),
                Err(_) => Some(a.as_str().cmp(text)),
            },
            _ => None,
        }
    }
}

/// Whether an order is one of the `[less, equal, greater]` a comparison wants.
fn wanted(order: Ordering, wanted: &[bool; 3]) -> bool {
    wanted[(order as i8 + 1) as usize]
}

/// The values of `$eq`, `$in` and their negations: strings apart, with their hashes side by
/// side, so a miss costs a few integer compares.
/// The first string is held inline: most sets have one (`$eq`, plain values), and a value that
/// misses it is turned away without reading memory elsewhere.
#[derive(Debug, Clone)]
struct Set {
    first: Option<(u64, Box<str>)>,
    more: Box<[(u64, Box<str>)]>,
    others: Box<[Value]>,
}

impl Set {
    fn of(values: &[Value]) -> Set {
        let mut strings = values
            .iter()
            .filter_map(|v| v.as_str().map(|s| (text_hash(s), Box::from(s))));
        Set {
            first: strings.next(),
            more: strings.collect(),
            others: values.iter().filter(|v| !v.is_string()).cloned().collect(),
        }
    }

    fn contains(&self, r: Reached<'_>) -> bool {
        match r.value {
            Value::String(s) => self
                .first
                .iter()
                .chain(self.more.iter())
                .any(|(h, w)| *h == r.hash && **w == **s),
            v => self.others.iter().any(|w| json_eq(v, w)),
        }
    }
}

impl Node {
    fn holds(&self, body: &Body<'_>) -> bool {
        match self {
            Node::All(nodes) => nodes.iter().all(|n| n.holds(body)),
            Node::Any(nodes) => nodes.iter().any(|n| n.holds(body)),
            Node::Not(node) => !node.holds(body),
            // A condition other filters have too is decided once per event.
            Node::Condition(c) if Arc::strong_count(c) > 1 => {
                if let Some(known) = body.decided.borrow().get(&c.id) {
                    return *known;
                }
                let holds = c.holds(body);
                let mut decided = body.decided.borrow_mut();
                if decided.len() < MEMO_DECIDED {
                    decided.insert(c.id, holds);
                }
                holds
            }
            Node::Condition(c) => c.holds(body),
        }
    }
}

impl Condition {
    fn holds(&self, body: &Body<'_>) -> bool {
        let path = &self.path;
        match &self.test {
            Test::Exists(want) => path.with_reached(body, |values| values.is_empty() != *want),
            // Equal to no value reached: also true where the path reaches nothing.
            Test::Nin(set) => {
                path.with_reached(body, |values| !values.iter().any(|r| set.contains(*r)))
            }
            // The receiver's timestamp against a time: the event's own instant, nothing parsed.
            Test::Compare(Bound::Time(t, _), want) if path.root == Root::Timestamp => {
                wanted(body.occurred_at.cmp(t), want)
            }
            test => path.with_reached(body, |values| values.iter().any(|r| test.passes(*r))),
        }
    }
}

impl Path {
    /// Calls `f` with every value this path reaches in `body` (none when it is missing).
    fn with_reached<R>(&self, body: &Body<'_>, f: impl FnOnce(&[Reached<'_>]) -> R) -> R {
        let single = match self.root {
            Root::Id => Reached {
                value: &body.id,
                hash: body.hashes[0],
            },
            Root::Type => Reached {
                value: &body.kind,
                hash: body.hashes[1],
            },
            Root::ClientId => Reached {
                value: &body.client_id,
                hash: body.hashes[2],
            },
            Root::Timestamp => body.timestamp(),
            Root::Data if self.rest.is_empty() => Reached::new(
                body.whole_data
                    .get_or_init(|| Value::Object(body.data.clone())),
            ),
            Root::Data => return self.with_reached_in_data(body, f),
        };
        f(&[single])
    }

    /// What a path below `data` reaches, from the event's memo or walked and remembered.
    fn with_reached_in_data<R>(&self, body: &Body<'_>, f: impl FnOnce(&[Reached<'_>]) -> R) -> R {
        let mut memo = body.reached.borrow_mut();
        let known = memo.get(&self.hash).and_then(|entries| {
            entries
                .iter()
                .find(|(text, _)| Arc::ptr_eq(text, &self.text) || **text == *self.text)
        });
        if let Some((_, values)) = known {
            return f(values);
        }
        let values = self.gather(body.data);
        let remembered = body.remembered.get() + values.len();
        if memo.len() >= MEMO_PATHS || remembered > MEMO_VALUES {
            return f(&values);
        }
        body.remembered.set(remembered);
        let entries = memo.entry(self.hash).or_default();
        entries.push((self.text.clone(), values));
        let (_, values) = &entries[entries.len() - 1];
        f(values)
    }

    /// Every value the segments reach below `data`.
    fn gather<'v>(&self, data: &'v Map<String, Value>) -> Vec<Reached<'v>> {
        let mut out = Vec::new();
        if let Some((first, rest)) = self.rest.split_first()
            && let Some(v) = data.get(&*first.key)
        {
            walk(v, rest, &mut out);
        }
        out
    }
}

#[cfg(test)]
thread_local! {
    /// Values visited by path walks on this thread, so tests can bound the work.
    static VISITS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Collects what `segments` reach from `value`: a numeric segment picks an array's element,
/// any other goes on into every element of an array it meets.
fn walk<'v>(value: &'v Value, segments: &[Segment], out: &mut Vec<Reached<'v>>) {
    #[cfg(test)]
    VISITS.with(|c| c.set(c.get() + 1));
    let Some((segment, rest)) = segments.split_first() else {
        // An array where the path ends is a value, and so is each of its elements.
        out.push(Reached::new(value));
        if let Value::Array(items) = value {
            out.extend(items.iter().map(Reached::new));
        }
        return;
    };
    match value {
        Value::Object(map) => {
            if let Some(v) = map.get(&*segment.key) {
                walk(v, rest, out);
            }
        }
        Value::Array(items) => match segment.index {
            Some(i) => {
                if let Some(v) = items.get(i) {
                    walk(v, rest, out);
                }
            }
            None => items.iter().for_each(|v| walk(v, segments, out)),
        },
        _ => {}
    }
}

impl Test {
    fn passes(&self, r: Reached<'_>) -> bool {
        let value = r.value;
        match self {
            Test::In(set) => set.contains(r),
            // Decided over every value at once, in `Node::holds`.
            Test::Nin(set) => !set.contains(r),
            Test::Compare(bound, want) => bound.order(value).is_some_and(|o| wanted(o, want)),
            Test::Exists(_) => true,
            Test::Regex(re) => value.as_str().is_some_and(|s| re.is_match(s)),
            Test::StartsWith(p) => value.as_str().is_some_and(|s| s.starts_with(p.as_str())),
            Test::EndsWith(p) => value.as_str().is_some_and(|s| s.ends_with(p.as_str())),
            Test::Contains(want) => match (value, want) {
                (Value::String(s), Value::String(w)) => s.contains(w.as_str()),
                (Value::Array(items), _) => items.iter().any(|v| json_eq(v, want)),
                _ => false,
            },
        }
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Numbers by value, exactly: integers as integers, an integer against a float by where the
/// integer lies around it (no rounding of either through `f64`).
fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    fn integer(n: &Number) -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    }
    /// `i` against the float `f`.
    fn mixed(i: i128, f: f64) -> Option<Ordering> {
        if f.is_nan() {
            return None;
        }
        // Every i64/u64 lies strictly inside ±2^127.
        if f >= 2f64.powi(127) {
            return Some(Ordering::Less);
        }
        if f < -(2f64.powi(127)) {
            return Some(Ordering::Greater);
        }
        let floor = f.floor();
        // Within ±2^127 the floor converts exactly.
        match i.cmp(&(floor as i128)) {
            Ordering::Equal if f > floor => Some(Ordering::Less),
            order => Some(order),
        }
    }
    match (integer(a), integer(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        (Some(x), None) => mixed(x, b.as_f64()?),
        (None, Some(y)) => mixed(y, a.as_f64()?).map(Ordering::reverse),
        (None, None) => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(data: Value) -> EventEnvelope {
        serde_json::from_value(json!({
            "id": "evt_1", "tenant": "acme", "type": "order.shipped", "client_id": "c1",
            "occurred_at": "2026-01-10T10:30:00Z", "received_at": "2026-01-10T10:30:01Z",
            "data": data
        }))
        .unwrap()
    }

    fn order() -> Value {
        json!({
            "order_id": "SO-1001",
            "status": "shipped",
            "warehouse": {"code": "AMS1", "country": "NL"},
            "qty": 12,
            "weight_kg": 3.5,
            "tags": ["fragile", "gift"],
            "note": null,
            "lines": [
                {"sku": "SKU-1", "qty": 2, "serials": ["A1", "A2"]},
                {"sku": "SKU-2", "qty": 10, "serials": []}
            ],
            "matrix": [[1, 2], [3]],
            "shipped_at": "2026-01-10T10:30:00Z",
            "codes": {"01": "x"},
            "big": 9007199254740993u64,
            "neg": -3
        })
    }

    fn check(filter: Value, data: &Value) -> bool {
        let f = Filter::parse(&filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        let e = event(data.clone());
        f.matches(&Body::of(&e))
    }

    #[test]
    fn every_operator_on_every_shape() {
        let data = order();
        let cases: &[(Value, bool)] = &[
            // Plain values: JSON equality, numbers by value.
            (json!({"data.status": "shipped"}), true),
            (json!({"data.status": "packed"}), false),
            (json!({"data.qty": 12.0}), true),
            (
                json!({"data.warehouse": {"country": "NL", "code": "AMS1"}}),
                true,
            ),
            (json!({"data.warehouse": {"country": "NL"}}), false),
            (json!({"data.tags": ["fragile", "gift"]}), true),
            (json!({"data.note": null}), true),
            (json!({"data.missing": null}), false),
            // Roots other than data.
            (json!({"type": "order.shipped"}), true),
            (json!({"id": {"$startsWith": "evt_"}}), true),
            (json!({"client_id": {"$in": ["c1", "c2"]}}), true),
            (json!({"timestamp": {"$gte": "2026-01-10T00:00:00Z"}}), true),
            (json!({"timestamp": {"$lt": "2026-01-10T00:00:00Z"}}), false),
            (json!({"data": {"$exists": true}}), true),
            // $eq / $neq.
            (json!({"data.status": {"$eq": "shipped"}}), true),
            (json!({"data.status": {"$neq": "shipped"}}), false),
            (json!({"data.status": {"$neq": "packed"}}), true),
            (json!({"data.missing": {"$neq": "x"}}), true),
            (json!({"data.missing": {"$nin": ["x"]}}), true),
            (json!({"data.missing": {"$in": ["x"]}}), false),
            // $in / $nin.
            (
                json!({"data.warehouse.country": {"$in": ["DE", "FR", "NL"]}}),
                true,
            ),
            (
                json!({"data.warehouse.country": {"$in": ["DE", "FR"]}}),
                false,
            ),
            (
                json!({"data.warehouse.country": {"$nin": ["DE", "FR"]}}),
                true,
            ),
            (json!({"data.warehouse.country": {"$nin": ["NL"]}}), false),
            (json!({"data.qty": {"$in": [1, 12.0]}}), true),
            // Ordering: numbers numerically, strings by code point, mismatch false.
            (json!({"data.qty": {"$gt": 10}}), true),
            (json!({"data.qty": {"$gt": 12}}), false),
            (json!({"data.qty": {"$gte": 12}}), true),
            (json!({"data.qty": {"$lt": 12.5}}), true),
            (json!({"data.qty": {"$lte": 11}}), false),
            (json!({"data.weight_kg": {"$gt": 3, "$lt": 4}}), true),
            (json!({"data.qty": {"$gt": "10"}}), false),
            (json!({"data.status": {"$gt": 1}}), false),
            (json!({"data.status": {"$gt": "packed"}}), true),
            (
                json!({"data.shipped_at": {"$gte": "2026-01-01T00:00:00Z"}}),
                true,
            ),
            (json!({"data.tags": {"$gt": 0}}), false),
            // $exists.
            (json!({"data.note": {"$exists": true}}), true),
            (json!({"data.missing": {"$exists": false}}), true),
            (json!({"data.missing": {"$exists": true}}), false),
            (json!({"data.warehouse.code": {"$exists": false}}), false),
            (json!({"data.lines.serials.0": {"$exists": true}}), true),
            // $regex: anywhere unless anchored; only strings.
            (json!({"data.order_id": {"$regex": "10"}}), true),
            (json!({"data.order_id": {"$regex": "^10"}}), false),
            (json!({"data.order_id": {"$regex": "^SO-\\d{4}$"}}), true),
            (json!({"data.qty": {"$regex": "12"}}), false),
            // $startsWith / $endsWith.
            (json!({"data.warehouse.code": {"$startsWith": "AMS"}}), true),
            (json!({"data.warehouse.code": {"$endsWith": "1"}}), true),
            (json!({"data.warehouse.code": {"$endsWith": "2"}}), false),
            (json!({"data.qty": {"$startsWith": "1"}}), false),
            // $contains: substring of a string, element of an array.
            (json!({"data.order_id": {"$contains": "-10"}}), true),
            (json!({"data.tags": {"$contains": "gift"}}), true),
            (json!({"data.tags": {"$contains": "heavy"}}), false),
            (json!({"data.matrix": {"$contains": [3]}}), true),
            (json!({"data.qty": {"$contains": 1}}), false),
            // Arrays: numeric segments index, others reach every element (any holds).
            (json!({"data.lines.0.sku": "SKU-1"}), true),
            (json!({"data.lines.1.sku": "SKU-1"}), false),
            (json!({"data.lines.5.sku": {"$exists": false}}), true),
            (json!({"data.lines.sku": "SKU-2"}), true),
            (json!({"data.lines.sku": "SKU-3"}), false),
            (json!({"data.lines.qty": {"$gte": 10}}), true),
            (json!({"data.lines.qty": {"$gt": 10}}), false),
            (json!({"data.lines.serials": {"$contains": "A2"}}), true),
            (json!({"data.matrix.0": [1, 2]}), true),
            // An array where the path ends: the array, and each of its elements.
            (json!({"data.matrix": {"$contains": 2}}), true),
            (json!({"data.matrix": {"$contains": 4}}), false),
            (json!({"data.tags": "gift"}), true),
            (json!({"data.tags": {"$in": ["gift", "heavy"]}}), true),
            (json!({"data.tags": {"$regex": "^fra"}}), true),
            (json!({"data.tags": {"$neq": "gift"}}), false),
            (json!({"data.tags": {"$nin": ["heavy", "bulky"]}}), true),
            (json!({"data.lines.serials": "A2"}), true),
            (json!({"data.lines.sku": {"$nin": ["SKU-1"]}}), false),
            (json!({"data.lines.sku": {"$neq": "SKU-3"}}), true),
            (json!({"data.lines.sku": {"$neq": "SKU-2"}}), false),
            // Digits index only without a leading zero; too many digits reach past the end.
            (json!({"data.lines.00.sku": {"$exists": false}}), true),
            (
                json!({"data.lines.99999999999999999999999.sku": {"$exists": false}}),
                true,
            ),
            (json!({"data.codes.01": "x"}), true),
            // Numbers compare exactly, also integers beyond 2^53 against floats.
            (json!({"data.big": 9007199254740992.0}), false),
            (json!({"data.big": {"$gt": 9007199254740992.0}}), true),
            (json!({"data.big": {"$lt": 9007199254740994.5}}), true),
            (json!({"data.qty": {"$gt": 11.999}}), true),
            (json!({"data.qty": {"$lt": 12.001, "$gt": -1e300}}), true),
            (json!({"data.neg": {"$lt": -2.5, "$gt": -3.5}}), true),
            // Strings that are RFC 3339 times compare as times, whatever their precision.
            (
                json!({"data.shipped_at": {"$lt": "2026-01-10T10:30:00.5Z"}}),
                true,
            ),
            (
                json!({"data.shipped_at": {"$gt": "2026-01-10T11:29:59+01:00"}}),
                true,
            ),
            (
                json!({"data.status": {"$lt": "2026-01-10T10:30:00Z"}}),
                false,
            ),
            // A key that is a number names an object's key where there is no array.
            (json!({"data.warehouse.0": {"$exists": false}}), true),
            // Paths below a scalar reach nothing.
            (json!({"data.status.length": {"$exists": false}}), true),
            // Combinators, nested.
            (
                json!({"$or": [{"data.status": "packed"}, {"data.qty": 12}]}),
                true,
            ),
            (
                json!({"$or": [{"data.status": "packed"}, {"data.qty": 13}]}),
                false,
            ),
            (
                json!({"$and": [{"data.status": "shipped"}, {"data.qty": 12}]}),
                true,
            ),
            (
                json!({"$and": [{"data.status": "shipped"}, {"data.qty": 13}]}),
                false,
            ),
            (json!({"$not": {"data.status": "packed"}}), true),
            (json!({"$not": {"data.status": "shipped"}}), false),
            (json!({"$not": {"data.missing": "x"}}), true),
            (json!({"$not": {"data.missing": {"$exists": true}}}), true),
            (
                json!({"data.status": "shipped",
                       "$or": [{"$not": {"data.warehouse.country": {"$in": ["NL"]}}},
                               {"$and": [{"data.lines.sku": "SKU-2"}, {"data.qty": {"$lt": 20}}]}]}),
                true,
            ),
            (
                json!({"$not": {"$or": [{"data.tags": {"$contains": "gift"}}, {"data.qty": 0}]}}),
                false,
            ),
        ];
        for (filter, want) in cases {
            assert_eq!(check(filter.clone(), &data), *want, "{filter}");
        }
    }

    #[test]
    fn a_missing_client_is_null_and_the_timestamp_is_the_receivers_text() {
        let mut e = event(json!({}));
        e.client_id = None;
        e.occurred_at = "2026-01-10T10:30:00.250Z".parse().unwrap();
        let body = Body::of(&e);
        let f = |v: Value| Filter::parse(&v).unwrap().matches(&body);
        assert!(f(json!({"client_id": null})));
        assert!(f(json!({"client_id": {"$exists": true}})));
        assert!(!f(json!({"client_id": {"$in": ["c1"]}})));
        assert!(f(json!({"timestamp": "2026-01-10T10:30:00.250Z"})));
        // By code point `.250Z` would sort before `00Z`; as times it is after.
        assert!(f(json!({"timestamp": {"$gte": "2026-01-10T10:30:00Z"}})));
        assert!(!f(json!({"timestamp": {"$lt": "2026-01-10T10:30:00Z"}})));
        assert!(f(
            json!({"timestamp": {"$lt": "2026-01-10T11:30:00.251+01:00"}})
        ));
        assert!(!f(
            json!({"timestamp": {"$gt": "2026-01-10T10:30:00.250Z"}})
        ));
        assert!(f(
            json!({"timestamp": {"$gte": "2026-01-10T10:30:00.250Z"}})
        ));
        let received: Value = serde_json::from_slice(&crate::delivery::receiver_body(&e)).unwrap();
        assert_eq!(received["timestamp"], json!("2026-01-10T10:30:00.250Z"));
    }

    #[test]
    fn refusals_name_the_place_and_the_rule() {
        let long_regex = "a".repeat(MAX_REGEX_CHARS + 1);
        let big_set: Vec<u32> = (0..=MAX_SET_VALUES as u32).collect();
        let many: Map<String, Value> = (0..=MAX_CONDITIONS)
            .map(|i| (format!("data.k{i}"), json!(i)))
            .collect();
        let mut deep = json!({"data.x": 1});
        for _ in 0..MAX_DEPTH {
            deep = json!({ "$not": deep });
        }
        let cases: Vec<(Value, &str)> = vec![
            (json!([]), "filter: must be an object"),
            (
                json!({"data.a": {"$in": ["x", "y\u{0}"]}}),
                "filter.data.a.$in[1]: must not contain the NUL character (\\u0000)",
            ),
            (
                json!({"$and": [{"data.a\u{0}$x": "v"}]}),
                "filter.$and[0]: must not contain the NUL character (\\u0000)",
            ),
            (
                json!({}),
                "filter: has no condition; a filter needs at least one key",
            ),
            (
                json!({"data.status": {"$like": "x"}}),
                "filter.data.status: unknown operator `$like`; operators are $eq, $neq, $in, $nin, $gt, $gte, $lt, $lte, $exists, $regex, $startsWith, $endsWith, $contains",
            ),
            (
                json!({"$xor": []}),
                "filter: unknown combinator `$xor`; a key is a path or one of $and, $or, $not",
            ),
            (
                json!({"$gt": 1}),
                "filter: $gt is an operator and needs a path, as in {\"data.status\": {\"$gt\": ...}}",
            ),
            (
                json!({"$or": [{"data.a": 1}, {"data.qty": {"$gt": true}}]}),
                "filter.$or[1].data.qty: $gt needs a number or a string",
            ),
            (
                json!({"data.a": {"$lte": null}}),
                "filter.data.a: $lte needs a number or a string",
            ),
            (
                json!({"data.a": {"$in": "x"}}),
                "filter.data.a: $in needs an array of values",
            ),
            (
                json!({"data.a": {"$nin": []}}),
                "filter.data.a: $nin needs 1 to 256 values; it has 0",
            ),
            (
                json!({"data.a": {"$in": big_set}}),
                "filter.data.a: $in needs 1 to 256 values; it has 257",
            ),
            (
                json!({"data.a": {"$exists": 1}}),
                "filter.data.a: $exists needs true or false",
            ),
            (
                json!({"data.a": {"$regex": 1}}),
                "filter.data.a: $regex needs a string",
            ),
            (
                json!({"data.a": {"$startsWith": 1}}),
                "filter.data.a: $startsWith needs a string",
            ),
            (
                json!({"data.a": {"$endsWith": ["x"]}}),
                "filter.data.a: $endsWith needs a string",
            ),
            (
                json!({"data.a": {"$regex": "(a"}}),
                "filter.data.a: $regex is not a valid pattern: unclosed group",
            ),
            (
                json!({"data.a": {"$regex": "(a)\\1"}}),
                "filter.data.a: $regex is not a valid pattern: backreferences are not supported",
            ),
            (
                json!({"data.a": {"$regex": long_regex}}),
                "filter.data.a: $regex is 257 characters; at most 256",
            ),
            (
                json!({"data.a": {"$regex": "\\w{200}\\w{200}"}}),
                "filter.data.a: $regex is too large once compiled (over 131072 bytes); simplify it (Unicode classes such as \\w, \\d or . repeated are large; [A-Za-z0-9_], [0-9] or (?-u:\\w) are small)",
            ),
            (
                json!({"data.a": {"$eq": 1, "b": 2}}),
                "filter.data.a: mixes operators with the plain key `b`; an operator object takes only `$` keys (compare with such an object through $eq)",
            ),
            (
                json!({"$and": []}),
                "filter.$and: $and needs an array of 1 to 20 filters",
            ),
            (
                json!({"data.a": {"$regex": "\\w"}, "data.b": {"$regex": "\\w"}, "data.c": {"$regex": "\\w"}}),
                "filter.data.c: $regex is too large once compiled: the regexes of one filter may take 131072 bytes in all; simplify them (Unicode classes such as \\w, \\d or . repeated are large; [A-Za-z0-9_], [0-9] or (?-u:\\w) are small)",
            ),
            (
                json!({"$or": vec![json!({"data.a": 1}); MAX_BRANCHES + 1]}),
                "filter.$or: $or needs an array of 1 to 20 filters",
            ),
            (
                json!({"$or": [{"data.a": 1}, 2]}),
                "filter.$or[1]: must be a filter object",
            ),
            (
                json!({"$not": [1]}),
                "filter.$not: $not needs a filter object",
            ),
            (
                json!({"$not": {}}),
                "filter.$not: has no condition; a filter needs at least one key",
            ),
            (
                deep,
                "filter.$not.$not.$not.$not.$not.$not.$not.$not: nests deeper than 8 levels",
            ),
            (
                Value::Object(many),
                "filter: has 65 conditions; at most 64 (each operator or plain value on a path is one)",
            ),
            (
                json!({"data.a": {"$in": vec!["x".repeat(40); 120]}}),
                "filter: is 5180 bytes as JSON; at most 4096",
            ),
            (
                json!({"status": "shipped"}),
                "filter.status: a path starts with one of id, type, timestamp, client_id, data (the body the receiver gets)",
            ),
            (
                json!({"data..status": 1}),
                "filter.data..status: a path is keys separated by single dots, none of them empty",
            ),
            (
                json!({"data.": 1}),
                "filter.data.: a path is keys separated by single dots, none of them empty",
            ),
            (
                json!({"type.group": 1}),
                "filter.type.group: `type` is a string; a path cannot go below it",
            ),
            (
                json!({"client_id.x": 1}),
                "filter.client_id.x: `client_id` is a string or null; a path cannot go below it",
            ),
            (
                json!({"$and": [{"$or": [{"data.a": {"$gte": {}}}]}]}),
                "filter.$and[0].$or[0].data.a: $gte needs a number or a string",
            ),
        ];
        for (filter, want) in cases {
            match Filter::parse(&filter) {
                Ok(_) => panic!("{filter} was accepted; wanted {want}"),
                Err(e) => assert_eq!(e.to_string(), want, "{filter}"),
            }
        }
    }

    #[test]
    fn filters_at_every_limit_are_accepted() {
        let mut deep = json!({"data.x": 1});
        for _ in 1..MAX_DEPTH {
            deep = json!({ "$not": deep });
        }
        let set: Vec<u32> = (0..MAX_SET_VALUES as u32).collect();
        let many: Map<String, Value> = (0..MAX_CONDITIONS)
            .map(|i| (format!("data.k{i}"), json!(i)))
            .collect();
        for f in [
            deep,
            json!({"data.a": {"$in": set}}),
            json!({"data.a": {"$regex": "a".repeat(MAX_REGEX_CHARS)}}),
            json!({"data.a": {"$regex": "^[A-Z]{2}-\\d{4}$", "$startsWith": "D"}}),
            json!({"data.a": {"$regex": "(?i)^dhl[ _-](express|parcel)"}}),
            json!({"data.a": {"$regex": "^[A-Za-z0-9_.+-]+@[A-Za-z0-9.-]+\\.[a-z]{2,}$"}}),
            json!({"data.a": {"$regex": "^\\w+$"}}),
            json!({"data.a": {"$regex": "^SKU-[0-9]{4,8}(-[A-Z]{2})?$"}}),
            json!({"$or": vec![json!({"data.a": 1}); MAX_BRANCHES]}),
            Value::Object(many),
        ] {
            let parsed = Filter::parse(&f).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed.as_json(), &f);
        }
        let f = Filter::parse(&json!({"data.a": {"$gt": 1, "$lt": 9}, "data.b": 2})).unwrap();
        assert_eq!(f.conditions(), 3);
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            json!({"data.a": {"$gt": 1, "$lt": 9}, "data.b": 2})
        );
    }

    /// An event whose `data.n` holds `width` arrays of `width` objects, each with four strings
    /// under `v.s`: nodes grow with the square of `width`.
    fn nested(width: usize) -> Value {
        let inner: Vec<Value> = (0..width)
            .map(|i| json!({"v": vec![json!({"s": "a".repeat(8 + i % 7)}); 4]}))
            .collect();
        json!({"n": vec![Value::Array(inner); width]})
    }

    #[test]
    fn a_hostile_filter_costs_work_linear_in_the_event() {
        // Regexes that backtracking engines take exponential time on, none of which matches,
        // and conditions through nested arrays that never hold, arranged so that evaluation
        // cannot stop early: every `$or` runs all its branches, every `$not` of one holds.
        const REGEXES: usize = 8;
        let failing = |i: usize| match (i, i % 2) {
            (0..REGEXES, _) => {
                let re = ["(a|aa)*c$", "^(a+)+b$", ".*.*.*=.*", "(x+x+)+y"][i % 4];
                json!({"data.n.v.s": {"$regex": re}})
            }
            // Paths of their own, each walked in full (an event remembers what a path reached).
            (_, 0) => json!({ format!("data.n.v.s.k{i}"): {"$in": ["b", "c", 1, 2.5]} }),
            _ => json!({ format!("data.n.v.k{i}"): {"$contains": "never"} }),
        };
        let negated: Vec<Value> = (0..MAX_BRANCHES)
            .map(|i| json!({"$not": {"$or": [failing(3 * i), failing(3 * i + 1), failing(3 * i + 2)]}}))
            .collect();
        let mut deep = failing(63);
        for _ in 2..MAX_DEPTH {
            deep = json!({"$and": [deep]});
        }
        let filter = Filter::parse(&json!({
            "$and": negated,
            "$or": [failing(60), failing(61), failing(62), deep],
        }))
        .unwrap();
        assert_eq!(filter.conditions(), MAX_CONDITIONS);

        let run = |width: usize| {
            let e = event(nested(width));
            VISITS.with(|c| c.set(0));
            let matched = filter.matches(&Body::of(&e));
            (VISITS.with(|c| c.get()), matched, count_nodes(&e.data))
        };
        let (small, matched, nodes_small) = run(8);
        assert!(!matched);
        let (big, _, nodes_big) = run(32);
        // Every path was walked to the end: the filter really was evaluated in full.
        let paths = 1 + MAX_CONDITIONS - REGEXES;
        assert!(
            small >= paths * nodes_small / 2,
            "{small} visits of {nodes_small} nodes"
        );
        // ... and each condition walks each node of the event at most once.
        assert!(
            small <= MAX_CONDITIONS * nodes_small,
            "{small} > 64 x {nodes_small}"
        );
        assert!(
            big <= MAX_CONDITIONS * nodes_big,
            "{big} > 64 x {nodes_big}"
        );
        // Sixteen times the nodes, at most sixteen times the work.
        let ratio = big as f64 / small as f64;
        let size_ratio = nodes_big as f64 / nodes_small as f64;
        assert!(
            ratio <= size_ratio * 1.05,
            "work grew {ratio}x for {size_ratio}x the event"
        );
    }

    #[test]
    fn an_event_remembers_a_bounded_number_of_values_and_still_answers_right() {
        let many: Vec<Value> = (0..MEMO_VALUES).map(|i| json!({"k": i, "j": i})).collect();
        let e = event(json!({"a": many}));
        let body = Body::of(&e);
        let holds = |f: Value| Filter::parse(&f).unwrap().matches(&body);
        // The first path fills the memo; the second is walked each time, with the same answers.
        for _ in 0..2 {
            assert!(holds(json!({"data.a.k": MEMO_VALUES - 1})));
            assert!(holds(json!({"data.a.j": {"$gte": MEMO_VALUES - 1}})));
            assert!(!holds(json!({"data.a.j": {"$gt": MEMO_VALUES}})));
        }
        assert!(body.remembered.get() <= MEMO_VALUES);
    }

    #[test]
    fn the_regexes_of_one_filter_share_one_budget() {
        // Unicode classes repeated: small to write, large to run.
        for re in ["\\w{10}", ".{300}", "[^a-z]{300}"] {
            let e = Filter::parse(&json!({"data.s": {"$regex": re}})).unwrap_err();
            assert!(e.message.contains("too large once compiled"), "{re}: {e}");
        }
        let big = "[a-m].{100}[^a-z]";
        assert!(Filter::parse(&json!({"data.s": {"$regex": big}})).is_ok());
        let e = Filter::parse(&json!({"data.s": {"$regex": big}, "data.t": {"$regex": big}}))
            .unwrap_err();
        assert_eq!(e.place, "filter.data.t");
        assert!(e.message.contains("131072 bytes in all"), "{e}");
        // Many small ones fit.
        let small: Map<String, Value> = (0..32)
            .map(|i| (format!("data.k{i}"), json!({"$regex": "^dhl-[0-9]+$"})))
            .collect();
        assert!(Filter::parse(&Value::Object(small)).is_ok());
    }

    #[test]
    fn a_condition_many_filters_have_is_held_once_and_decided_once_per_event() {
        // A path no other test names: the tables are process-wide and tests run in parallel.
        let low = json!({"data.qty": {"$lt": 20}, "data.warehouse.code": "AMS1"});
        let a = Filter::parse(&low).unwrap();
        let b = Filter::parse(
            &json!({"data.warehouse.code": {"$eq": "AMS1"}, "data.tags": {"$contains": "gift"}}),
        )
        .unwrap();
        let ids = |f: &Filter| {
            let mut out = Vec::new();
            fn walk(n: &Node, out: &mut Vec<u64>) {
                match n {
                    Node::All(v) | Node::Any(v) => v.iter().for_each(|n| walk(n, out)),
                    Node::Not(n) => walk(n, out),
                    Node::Condition(c) => out.push(c.id),
                }
            }
            walk(&f.root, &mut out);
            out
        };
        // `"AMS1"` and `{"$eq": "AMS1"}` on the same path are one condition.
        let shared: Vec<u64> = ids(&a)
            .into_iter()
            .filter(|id| ids(&b).contains(id))
            .collect();
        assert_eq!(shared.len(), 1);
        let data = order();
        let e = event(data);
        let body = Body::of(&e);
        assert!(a.matches(&body));
        assert!(b.matches(&body));
        assert_eq!(body.decided.borrow().get(&shared[0]), Some(&true));
        // Another event, other answers: nothing carries over between bodies.
        let mut other = order();
        other["warehouse"]["code"] = json!("RTM2");
        let e2 = event(other);
        let body2 = Body::of(&e2);
        assert!(!a.matches(&body2));
        assert!(!b.matches(&body2));
        // Once every filter holding it is gone, a new one gets a condition of its own.
        let id = shared[0];
        drop((a, b));
        let c = Filter::parse(&low).unwrap();
        assert!(!ids(&c).contains(&id));
    }

    #[test]
    fn a_shortcut_settles_a_filter_only_from_answers_the_event_already_has() {
        let e = event(order());
        let body = Body::of(&e);
        let shipped = json!({"data.status": "shipped", "data.qty": {"$gt": 10}});
        let first = Filter::parse(&shipped).unwrap();
        // The same two conditions, and one the event has not decided yet.
        let same = Filter::parse(&shipped).unwrap();
        let wider = Filter::parse(
            &json!({"data.status": "shipped", "data.qty": {"$gt": 10}, "data.note": null}),
        )
        .unwrap();
        let packed =
            Filter::parse(&json!({"data.status": "packed", "data.qty": {"$gt": 10}})).unwrap();
        let either = Filter::parse(&json!({"$or": [{"data.status": "shipped"}]})).unwrap();
        // Nothing decided yet: nothing is known.
        assert_eq!(body.known(&same.shortcut()), None);
        assert!(first.matches(&body));
        // All of `same` is known true; `wider` has a condition of its own.
        assert_eq!(body.known(&same.shortcut()), Some(true));
        assert_eq!(body.known(&wider.shortcut()), None);
        assert!(wider.matches(&body));
        // One shared condition known false is enough to turn a filter away.
        let other = Filter::parse(&json!({"data.status": "packed"})).unwrap();
        assert!(!other.matches(&body));
        assert_eq!(body.known(&packed.shortcut()), Some(false));
        assert!(!packed.matches(&body));
        // A filter that is no plain AND has no shortcut.
        assert_eq!(body.known(&either.shortcut()), None);
        assert!(either.matches(&body));
    }

    #[test]
    fn what_a_shortcut_settles_is_what_the_filter_says() {
        // Filters and events drawn from a small vocabulary, so that conditions, paths and
        // values meet often; every answer the event's memo gives must be the filter's own.
        let mut seed: u64 = 0x9e37_79b9;
        let mut next = move |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % n
        };
        let words = ["a", "b", "c", "shipped", "packed", "NL", "DE"];
        let paths = ["data.s", "data.t", "data.l.k", "data.tags", "data.n"];
        let condition = |next: &mut dyn FnMut(usize) -> usize| {
            let path = paths[next(paths.len())];
            let w = |next: &mut dyn FnMut(usize) -> usize| json!(words[next(words.len())]);
            let value = match next(7) {
                0 => w(next),
                1 => json!({"$neq": w(next)}),
                2 => json!({"$in": [w(next), w(next)]}),
                3 => json!({"$nin": [w(next), w(next), w(next)]}),
                4 => json!({"$in": [w(next), 1]}),
                5 => json!({"$gt": next(5)}),
                _ => json!({"$exists": next(2) == 0}),
            };
            (path.to_owned(), value)
        };
        let mut filters = Vec::new();
        for _ in 0..300 {
            let mut m = Map::new();
            for _ in 0..1 + next(4) {
                let (p, v) = condition(&mut next);
                m.insert(p, v);
            }
            filters.push(Filter::parse(&Value::Object(m)).unwrap());
        }
        let mut settled = 0;
        for _ in 0..200 {
            let word = |next: &mut dyn FnMut(usize) -> usize| json!(words[next(words.len())]);
            let mut data = json!({
                "s": word(&mut next),
                "l": [{"k": word(&mut next)}, {"k": word(&mut next)}],
                "tags": [word(&mut next), word(&mut next)],
                "n": next(6),
            });
            if next(2) == 0 {
                data["t"] = word(&mut next);
            }
            let e = event(data);
            let body = Body::of(&e);
            for _ in 0..600 {
                let f = &filters[next(filters.len())];
                let known = body.known(&f.shortcut());
                let holds = f.matches(&body);
                if let Some(k) = known {
                    settled += 1;
                    assert_eq!(
                        k,
                        holds,
                        "{:?} on {}",
                        f,
                        serde_json::to_string(&e.data).unwrap()
                    );
                }
            }
        }
        // The shortcut did settle a good share of them.
        assert!(settled > 20_000, "{settled}");
    }

    fn count_nodes(map: &Map<String, Value>) -> usize {
        fn count(v: &Value) -> usize {
            1 + match v {
                Value::Array(a) => a.iter().map(count).sum(),
                Value::Object(m) => m.values().map(count).sum(),
                _ => 0,
            }
        }
        map.values().map(count).sum()
    }
}
