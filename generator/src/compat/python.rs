//! Python values as `yaml.safe_load` returns them, and what the reference generators do with
//! them: `str()`, truthiness (`x or ""`), and arithmetic on `int`, `float` and `bool`.
//!
//! The generations from G2 on compute with whatever Python objects their YAML holds, so a
//! config with `tensor_parallel_size: 2.0` writes `gpusPerGenServer=2.0`, `gpus_per_node: true`
//! writes `gpusPerNode=True`, and `math.ceil(gpus / gpus_per_node)` divides as floats do. This
//! module keeps those semantics so that a generation module can state its rules in Python's
//! terms and stay byte-exact on inputs that config.rs's typed model (G1, native) refuses.
//!
//! Reading ([`safe_load`]): serde_norway parses the YAML (anchors, aliases, `!!str`-style core
//! tags), and mappings are built as Python dicts, as PyYAML's constructor builds them:
//! - a repeated key keeps its first position and takes the last value;
//! - `1`, `1.0` and `true` are one key; a list or a mapping as a key is an error;
//! - `<<` merges like PyYAML's `flatten_mapping`: explicit keys win over merged ones, and of
//!   several merged mappings the earlier one wins;
//! - any other tag (`!foo x`) is an error, as `safe_load` has no constructor for it.
//!
//! Known differences from PyYAML, the same as G1's reading in config.rs: plain scalars are
//! resolved by YAML 1.2 rules (serde_norway), so YAML 1.1-only spellings (`yes`, `on`, `010`,
//! `1_000`, `1:30`, dates) stay strings and `0o10`, `1e3` become numbers; an integer beyond 128
//! bits is read as a float. Arithmetic stays within 128-bit integers, and a division of
//! integers within 2^53 (where an `f64` division is exactly Python's); beyond, it is an error
//! ([`NumError::TooLarge`]) rather than a different number.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, VariantAccess, Visitor};

use crate::pytext;

/// A value of the kinds `yaml.safe_load` returns for configs.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    List(Vec<PyValue>),
    Dict(Dict),
}

/// A Python `dict`: insertion-ordered, with Python's key equality.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dict {
    entries: Vec<(PyValue, PyValue)>,
}

/// How a key is found again: Python's `==` between hashable values (`1 == 1.0 == True`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    None,
    /// Booleans, integers and integral floats within 128 bits.
    Number(i128),
    /// Other floats, by their bits (NaN is never found again, as in Python).
    Float(u64),
    Str(String),
}

impl PyValue {
    /// Python's `str()`: a string as it is, everything else as its `repr()`.
    pub fn py_str(&self) -> String {
        match self {
            Self::Str(text) => text.clone(),
            other => other.py_repr(),
        }
    }

    /// Python's `repr()`.
    pub fn py_repr(&self) -> String {
        match self {
            Self::None => "None".to_owned(),
            Self::Bool(true) => "True".to_owned(),
            Self::Bool(false) => "False".to_owned(),
            Self::Int(value) => value.to_string(),
            Self::Float(value) => pytext::repr_float(*value),
            Self::Str(text) => pytext::repr_str(text),
            Self::List(items) => {
                let items: Vec<String> = items.iter().map(Self::py_repr).collect();
                format!("[{}]", items.join(", "))
            }
            Self::Dict(dict) => {
                let items: Vec<String> = dict
                    .entries
                    .iter()
                    .map(|(key, value)| format!("{}: {}", key.py_repr(), value.py_repr()))
                    .collect();
                format!("{{{}}}", items.join(", "))
            }
        }
    }

    /// Python's truth value (`x or ""` keeps `x` exactly when this is true).
    pub fn is_truthy(&self) -> bool {
        match self {
            Self::None => false,
            Self::Bool(flag) => *flag,
            Self::Int(value) => *value != 0,
            Self::Float(value) => *value != 0.0,
            Self::Str(text) => !text.is_empty(),
            Self::List(items) => !items.is_empty(),
            Self::Dict(dict) => !dict.entries.is_empty(),
        }
    }

    /// A short description for messages: scalars as Python writes them, in backticks.
    pub fn describe(&self) -> String {
        match self {
            Self::List(_) => "a list".to_owned(),
            Self::Dict(_) => "a mapping".to_owned(),
            Self::None => "`null`".to_owned(),
            other => format!("`{}`", other.py_repr()),
        }
    }

    fn key(&self) -> Result<Option<Key>, String> {
        Ok(Some(match self {
            Self::None => Key::None,
            Self::Bool(flag) => Key::Number(i128::from(*flag)),
            Self::Int(value) => Key::Number(*value),
            Self::Float(value) if value.is_nan() => return Ok(None),
            Self::Float(value) => match integral(*value) {
                Some(number) => Key::Number(number),
                None => Key::Float(value.to_bits()),
            },
            Self::Str(text) => Key::Str(text.clone()),
            Self::List(_) | Self::Dict(_) => {
                return Err(format!("`{}`, {}", self.py_repr(), self.describe()));
            }
        }))
    }
}

/// `value` as an exact integer, when it is one within 128 bits (`-0.0` is `0`).
fn integral(value: f64) -> Option<i128> {
    const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0; // 2^127
    (value.fract() == 0.0 && value.abs() < LIMIT).then_some(value as i128)
}

impl Dict {
    /// An empty dict.
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// The value under the string key `key` (`dict.get(key)`; `None` when absent).
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        self.entries.iter().find_map(|(name, value)| match name {
            PyValue::Str(name) if name == key => Some(value),
            _ => None,
        })
    }

    /// The entries in insertion order.
    pub fn entries(&self) -> &[(PyValue, PyValue)] {
        &self.entries
    }

    /// Builds a dict from pairs in order, as Python's `d[k] = v` would.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (PyValue, PyValue)>) -> Result<Self, String> {
        let mut builder = DictBuilder::default();
        for (key, value) in pairs {
            builder.insert(key, value)?;
        }
        Ok(builder.dict)
    }
}

/// A dict under construction, with an index from key to position.
#[derive(Default)]
struct DictBuilder {
    dict: Dict,
    index: HashMap<Key, usize>,
}

impl DictBuilder {
    /// `d[key] = value`; `Err` shows an unhashable key.
    fn insert(&mut self, key: PyValue, value: PyValue) -> Result<(), String> {
        match key.key()? {
            Some(found) => match self.index.get(&found) {
                Some(&position) => self.dict.entries[position].1 = value,
                None => {
                    self.index.insert(found, self.dict.entries.len());
                    self.dict.entries.push((key, value));
                }
            },
            None => self.dict.entries.push((key, value)),
        }
        Ok(())
    }
}

/// Parses one YAML document as `yaml.safe_load` would (see the module docs for the limits).
/// The error is serde_norway's message, with its position.
pub fn safe_load(text: &str) -> Result<PyValue, String> {
    serde_norway::from_str(text).map_err(|error| error.to_string())
}

impl<'de> Deserialize<'de> for PyValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = PyValue;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a YAML value")
    }

    fn visit_unit<E>(self) -> Result<PyValue, E> {
        Ok(PyValue::None)
    }

    fn visit_none<E>(self) -> Result<PyValue, E> {
        Ok(PyValue::None)
    }

    fn visit_bool<E>(self, value: bool) -> Result<PyValue, E> {
        Ok(PyValue::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<PyValue, E> {
        Ok(PyValue::Int(i128::from(value)))
    }

    fn visit_u64<E>(self, value: u64) -> Result<PyValue, E> {
        Ok(PyValue::Int(i128::from(value)))
    }

    fn visit_i128<E>(self, value: i128) -> Result<PyValue, E> {
        Ok(PyValue::Int(value))
    }

    fn visit_u128<E>(self, value: u128) -> Result<PyValue, E> {
        Ok(i128::try_from(value).map_or(PyValue::Float(value as f64), PyValue::Int))
    }

    fn visit_f64<E>(self, value: f64) -> Result<PyValue, E> {
        Ok(PyValue::Float(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<PyValue, E> {
        Ok(PyValue::Str(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<PyValue, E> {
        Ok(PyValue::Str(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<PyValue, A::Error> {
        let mut list = Vec::new();
        while let Some(item) = items.next_element()? {
            list.push(item);
        }
        Ok(PyValue::List(list))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PyValue, A::Error> {
        let mut explicit: Vec<(PyValue, PyValue)> = Vec::new();
        let mut merged: Vec<(PyValue, PyValue)> = Vec::new();
        while let Some(key) = map.next_key::<PyValue>()? {
            let value: PyValue = map.next_value()?;
            if key != PyValue::Str("<<".to_owned()) {
                explicit.push((key, value));
                continue;
            }
            // PyYAML's flatten_mapping: a mapping, or a list of mappings of which the first
            // wins (they are merged in reverse order).
            let not_mergeable = || {
                de::Error::custom(
                    "expected a mapping or list of mappings for merging (`<<`), found another value",
                )
            };
            match value {
                PyValue::Dict(dict) => merged.extend(dict.entries),
                PyValue::List(items) => {
                    for item in items.into_iter().rev() {
                        match item {
                            PyValue::Dict(dict) => merged.extend(dict.entries),
                            _ => return Err(not_mergeable()),
                        }
                    }
                }
                _ => return Err(not_mergeable()),
            }
        }
        Dict::from_pairs(merged.into_iter().chain(explicit))
            .map(PyValue::Dict)
            .map_err(|key| de::Error::custom(format!("found an unhashable key {key}")))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<PyValue, A::Error> {
        // serde_norway hands over values with a tag it does not resolve itself as enums.
        let (tag, variant): (String, _) = data.variant()?;
        let _value: PyValue = variant.newtype_variant()?;
        Err(de::Error::custom(format!(
            "could not determine a constructor for the tag `!{tag}`"
        )))
    }
}

/// A Python number: `bool` (an `int` that prints as `True`/`False`), `int` or `float`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Bool(bool),
    Int(i128),
    Float(f64),
}

/// Why Python arithmetic failed, or left the range launch-gen computes in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NumError {
    /// `ZeroDivisionError`.
    ZeroDivision,
    /// `math.ceil` of a NaN (`ValueError`) or an infinity (`OverflowError`).
    NotFinite(f64),
    /// Beyond 128-bit integers, or an integer division beyond 2^53.
    TooLarge,
}

impl fmt::Display for NumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroDivision => f.write_str("division by zero"),
            Self::NotFinite(value) => write!(
                f,
                "the number of nodes would be `{}`, not a finite number",
                pytext::repr_float(*value)
            ),
            Self::TooLarge => f.write_str(
                "the numbers are too large (launch-gen computes within 128-bit integers, and \
                 divides integers within 2^53)",
            ),
        }
    }
}

/// 2^53: integers up to this convert to `f64` exactly.
const EXACT_IN_F64: i128 = 1 << 53;

impl Num {
    /// The number a YAML value holds; `None` for strings, lists, mappings and null.
    pub fn from_value(value: &PyValue) -> Option<Self> {
        match value {
            PyValue::Bool(flag) => Some(Self::Bool(*flag)),
            PyValue::Int(number) => Some(Self::Int(*number)),
            PyValue::Float(number) => Some(Self::Float(*number)),
            _ => None,
        }
    }

    fn int(self) -> Option<i128> {
        match self {
            Self::Bool(flag) => Some(i128::from(flag)),
            Self::Int(number) => Some(number),
            Self::Float(_) => None,
        }
    }

    fn float(self) -> f64 {
        match self {
            Self::Bool(flag) => f64::from(u8::from(flag)),
            Self::Int(number) => number as f64,
            Self::Float(number) => number,
        }
    }

    /// `self * other`.
    pub fn times(self, other: Self) -> Result<Self, NumError> {
        match (self.int(), other.int()) {
            (Some(a), Some(b)) => a.checked_mul(b).map(Self::Int).ok_or(NumError::TooLarge),
            _ => Ok(Self::Float(self.float() * other.float())),
        }
    }

    /// `self + other`.
    pub fn plus(self, other: Self) -> Result<Self, NumError> {
        match (self.int(), other.int()) {
            (Some(a), Some(b)) => a.checked_add(b).map(Self::Int).ok_or(NumError::TooLarge),
            _ => Ok(Self::Float(self.float() + other.float())),
        }
    }

    /// `math.ceil(self / other)`: true division, then the ceiling as an `int`.
    pub fn ceil_div(self, other: Self) -> Result<Self, NumError> {
        let quotient = match (self.int(), other.int()) {
            (_, Some(0)) => return Err(NumError::ZeroDivision),
            (Some(a), Some(b)) => {
                if a.abs() > EXACT_IN_F64 || b.abs() > EXACT_IN_F64 {
                    return Err(NumError::TooLarge);
                }
                a as f64 / b as f64
            }
            _ if other.float() == 0.0 => return Err(NumError::ZeroDivision),
            _ => self.float() / other.float(),
        };
        if !quotient.is_finite() {
            return Err(NumError::NotFinite(quotient));
        }
        integral(quotient.ceil())
            .map(Self::Int)
            .ok_or(NumError::TooLarge)
    }

    /// Python's `min(self, other)`: `other` only when it is strictly smaller.
    pub fn min(self, other: Self) -> Self {
        if other.less_than(self) { other } else { self }
    }

    /// Python's `<` between numbers: exact, also between integers and floats.
    fn less_than(self, other: Self) -> bool {
        match (self.int(), other.int()) {
            (Some(a), Some(b)) => a < b,
            (Some(a), None) => int_below_float(a, other.float()),
            (None, Some(b)) => float_below_int(self.float(), b),
            (None, None) => self.float() < other.float(),
        }
    }
}

/// `a < f` exactly.
fn int_below_float(a: i128, f: f64) -> bool {
    if f.is_nan() {
        return false;
    }
    match integral(f.floor()) {
        Some(floor) => a < floor || (a == floor && f > f.floor()),
        None => f > 0.0,
    }
}

/// `f < b` exactly.
fn float_below_int(f: f64, b: i128) -> bool {
    if f.is_nan() {
        return false;
    }
    match integral(f.ceil()) {
        Some(ceil) => ceil < b || (ceil == b && f < f.ceil()),
        None => f < 0.0,
    }
}

impl fmt::Display for Num {
    /// Python's `str()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(true) => f.write_str("True"),
            Self::Bool(false) => f.write_str("False"),
            Self::Int(number) => write!(f, "{number}"),
            Self::Float(number) => f.write_str(&pytext::repr_float(*number)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> PyValue {
        safe_load(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
    }

    /// Expected values from PyYAML 6.0's `safe_load` and CPython 3.11's `repr()`.
    #[test]
    fn mappings_are_built_as_pyyaml_builds_them() {
        let cases = [
            ("a: 1\na: 2\nb: 3\n", "{'a': 2, 'b': 3}"),
            ("1: a\n1.0: b\ntrue: c\n", "{1: 'c'}"),
            (
                "x: &x {p: 1, q: 2}\ny:\n  <<: *x\n  q: 3\n",
                "{'x': {'p': 1, 'q': 2}, 'y': {'p': 1, 'q': 3}}",
            ),
            (
                "y:\n  q: 3\n  <<: {p: 1, q: 2}\n",
                "{'y': {'p': 1, 'q': 3}}",
            ),
            (
                "y:\n  <<: [{p: 1}, {p: 2, r: 3}]\n",
                "{'y': {'p': 1, 'r': 3}}",
            ),
            ("y:\n  <<: {p: 1}\n  <<: {p: 2}\n", "{'y': {'p': 2}}"),
            (
                "a: [1, 2.5, true, null, x, '7']\n",
                "{'a': [1, 2.5, True, None, 'x', '7']}",
            ),
            ("a: !!str 5\n", "{'a': '5'}"),
            ("", "None"),
            ("a:\n", "{'a': None}"),
            (
                "a: .nan\nb: -.inf\nc: 1.0e+3\n",
                "{'a': nan, 'b': -inf, 'c': 1000.0}",
            ),
        ];
        for (text, repr) in cases {
            assert_eq!(load(text).py_repr(), repr, "{text:?}");
        }
    }

    #[test]
    fn what_safe_load_refuses_is_an_error() {
        for (text, needle) in [
            ("[a]: 1\n", "unhashable key `['a']`, a list"),
            ("{a: 1}: 1\n", "unhashable key `{'a': 1}`, a mapping"),
            ("a:\n  <<: 5\n", "mapping or list of mappings for merging"),
            ("a:\n  <<: [5]\n", "mapping or list of mappings for merging"),
            ("a: !foo x\n", "constructor for the tag `!foo`"),
            ("a: [1\n", "did not find expected"),
            ("--- 1\n--- 2\n", "more than one document"),
        ] {
            let error = safe_load(text).expect_err(text);
            assert!(error.contains(needle), "{text:?}: {error}");
        }
    }

    #[test]
    fn lookups_str_and_truthiness_follow_python() {
        let PyValue::Dict(dict) = load("a: 0\nb: ''\nc: x\n7: seven\n") else {
            panic!("a dict");
        };
        assert_eq!(dict.get("c"), Some(&PyValue::Str("x".to_owned())));
        assert_eq!(dict.get("7"), None);
        assert_eq!(dict.get("z"), None);
        let truthy: Vec<bool> = ["a", "b", "c"]
            .iter()
            .map(|key| dict.get(key).is_some_and(PyValue::is_truthy))
            .collect();
        assert_eq!(truthy, [false, false, true]);
        for (value, str_) in [
            (PyValue::Float(64.0), "64.0"),
            (PyValue::Bool(true), "True"),
            (PyValue::None, "None"),
            (PyValue::Str("it's".to_owned()), "it's"),
            (
                PyValue::List(vec![PyValue::Int(64), PyValue::Str("a".to_owned())]),
                "[64, 'a']",
            ),
        ] {
            assert_eq!(value.py_str(), str_);
        }
        assert!(PyValue::Float(f64::NAN).is_truthy());
        assert!(!PyValue::Float(-0.0).is_truthy());
    }

    /// Expected values from CPython 3.11.
    #[test]
    fn arithmetic_follows_python() {
        use Num::{Bool, Float, Int};
        let show = |result: Result<Num, NumError>| match result {
            Ok(value) => value.to_string(),
            Err(error) => format!("{error:?}"),
        };
        let cases: &[(Result<Num, NumError>, &str)] = &[
            (Int(4).times(Int(2)), "8"),
            (Bool(true).times(Int(1)), "1"),
            (Float(2.0).times(Int(1)), "2.0"),
            (Int(1).plus(Float(0.5)), "1.5"),
            (Bool(true).plus(Bool(true)), "2"),
            (Int(5).ceil_div(Int(4)), "2"),
            (Int(-4).ceil_div(Int(4)), "-1"),
            (Int(-1).ceil_div(Int(4)), "0"),
            (Int(4).ceil_div(Float(0.5)), "8"),
            (Float(1e300).ceil_div(Float(1e-300)), "NotFinite(inf)"),
            (Int(1).ceil_div(Int(0)), "ZeroDivision"),
            (Int(1).ceil_div(Float(-0.0)), "ZeroDivision"),
            (Int(1).ceil_div(Bool(false)), "ZeroDivision"),
            (Float(f64::NAN).ceil_div(Int(4)), "NotFinite(NaN)"),
            (Int(1 << 60).ceil_div(Int(3)), "TooLarge"),
            (Int(i128::MAX).plus(Int(1)), "TooLarge"),
            (Ok(Int(4).min(Float(4.0))), "4"),
            (Ok(Float(4.0).min(Int(4))), "4.0"),
            (Ok(Bool(true).min(Int(4))), "True"),
            (Ok(Int(8).min(Float(7.5))), "7.5"),
            (Ok(Float(f64::NAN).min(Int(4))), "nan"),
            (Ok(Int(4).min(Float(f64::NAN))), "4"),
            (
                Ok(Int((1 << 60) + 1).min(Float((1u64 << 60) as f64))),
                "1.152921504606847e+18",
            ),
            (
                Ok(Int(1 << 60).min(Float((1u64 << 60) as f64))),
                "1152921504606846976",
            ),
        ];
        for (index, (result, expected)) in cases.iter().enumerate() {
            assert_eq!(show(*result), *expected, "case {index}");
        }
    }
}
