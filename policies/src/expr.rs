//! The invariant language: comparisons, integer arithmetic and boolean logic over an object's
//! fields after an entry (`name`) and before it (`prev.name`).
//!
//! Expressions are parsed and type-checked against the schema when the descriptor is parsed;
//! evaluation is total (overflow and division by zero are errors, never wrap-around or panic).

use crate::schema::{FieldType, Fields, Schema, Value};

/// Longest expression source accepted.
pub const MAX_EXPR_LEN: usize = 4096;
/// Deepest nesting accepted (bounds the parser's recursion).
pub const MAX_DEPTH: usize = 64;

/// A parsed, type-checked expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    node: Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Int(i64),
    Bool(bool),
    Str(String),
    Field { name: String, prev: bool },
    Len { name: String, prev: bool },
    Not(Box<Node>),
    Neg(Box<Node>),
    Bin(BinOp, Box<Node>, Box<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Int,
    Bool,
    /// Strings and enum variants compare with string literals.
    Text,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Int(i64),
    Str(String),
    Ident(String),
    Op(&'static str),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while bytes
                .get(i)
                .is_some_and(|b| b.is_ascii_digit() || *b == b'_')
            {
                i += 1;
            }
            let text: String = src
                .get(start..i)
                .unwrap_or_default()
                .chars()
                .filter(|c| *c != '_')
                .collect();
            let n = text
                .parse::<i64>()
                .map_err(|_| format!("integer literal {text} is out of range"))?;
            out.push(Tok::Int(n));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while bytes
                .get(i)
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
            {
                i += 1;
            }
            out.push(Tok::Ident(
                src.get(start..i).unwrap_or_default().to_string(),
            ));
        } else if c == b'"' {
            i += 1;
            let start = i;
            while bytes.get(i).is_some_and(|b| *b != b'"') {
                i += 1;
            }
            if bytes.get(i).is_none() {
                return Err("unterminated string literal".into());
            }
            out.push(Tok::Str(src.get(start..i).unwrap_or_default().to_string()));
            i += 1;
        } else {
            const OPS: [&str; 19] = [
                "&&", "||", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "!", "(",
                ")", ".", ",", "=",
            ];
            let rest = src.get(i..).unwrap_or_default();
            let op = OPS
                .iter()
                .find(|op| rest.starts_with(**op))
                .ok_or_else(|| format!("unexpected character {:?}", rest.chars().next()))?;
            if *op == "=" {
                return Err("use == to compare".into());
            }
            out.push(Tok::Op(op));
            i += op.len();
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect_op(&mut self, op: &str) -> Result<(), String> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err(format!("expected `{op}`"))
        }
    }
    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(format!("expression nests deeper than {MAX_DEPTH}"))
        } else {
            Ok(())
        }
    }

    fn binary(&mut self, level: usize) -> Result<Node, String> {
        const LEVELS: [&[(&str, BinOp)]; 5] = [
            &[("||", BinOp::Or)],
            &[("&&", BinOp::And)],
            &[
                ("==", BinOp::Eq),
                ("!=", BinOp::Ne),
                ("<=", BinOp::Le),
                (">=", BinOp::Ge),
                ("<", BinOp::Lt),
                (">", BinOp::Gt),
            ],
            &[("+", BinOp::Add), ("-", BinOp::Sub)],
            &[("*", BinOp::Mul), ("/", BinOp::Div), ("%", BinOp::Rem)],
        ];
        let Some(ops) = LEVELS.get(level) else {
            return self.unary();
        };
        self.enter()?;
        let mut lhs = self.binary(level + 1)?;
        'outer: loop {
            for (text, op) in ops.iter() {
                if self.eat_op(text) {
                    let rhs = self.binary(level + 1)?;
                    lhs = Node::Bin(*op, Box::new(lhs), Box::new(rhs));
                    // Comparisons do not chain: `a < b < c` is an error below (bool < int).
                    continue 'outer;
                }
            }
            break;
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Node, String> {
        self.enter()?;
        let node = if self.eat_op("!") {
            Node::Not(Box::new(self.unary()?))
        } else if self.eat_op("-") {
            Node::Neg(Box::new(self.unary()?))
        } else {
            self.primary()?
        };
        self.depth -= 1;
        Ok(node)
    }

    fn field_ref(&mut self) -> Result<(String, bool), String> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Ident(id)) if id == "prev" => {
                self.pos += 1;
                self.expect_op(".")?;
                match self.toks.get(self.pos).cloned() {
                    Some(Tok::Ident(name)) => {
                        self.pos += 1;
                        Ok((name, true))
                    }
                    _ => Err("expected a field name after `prev.`".into()),
                }
            }
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                Ok((name, false))
            }
            _ => Err("expected a field name".into()),
        }
    }

    fn primary(&mut self) -> Result<Node, String> {
        match self.peek().cloned() {
            Some(Tok::Int(n)) => {
                self.pos += 1;
                Ok(Node::Int(n))
            }
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Node::Str(s))
            }
            Some(Tok::Ident(id)) if id == "true" || id == "false" => {
                self.pos += 1;
                Ok(Node::Bool(id == "true"))
            }
            Some(Tok::Ident(id)) if id == "len" => {
                self.pos += 1;
                self.expect_op("(")?;
                let (name, prev) = self.field_ref()?;
                self.expect_op(")")?;
                Ok(Node::Len { name, prev })
            }
            Some(Tok::Ident(_)) => {
                let (name, prev) = self.field_ref()?;
                Ok(Node::Field { name, prev })
            }
            Some(Tok::Op("(")) => {
                self.pos += 1;
                let e = self.binary(0)?;
                self.expect_op(")")?;
                Ok(e)
            }
            Some(Tok::Op(op)) => Err(format!("unexpected `{op}`")),
            None => Err("unexpected end of expression".into()),
        }
    }
}

fn ty_of(ty: &FieldType) -> Ty {
    match ty {
        FieldType::Int { .. } => Ty::Int,
        FieldType::Bool => Ty::Bool,
        FieldType::String { .. } | FieldType::Enum { .. } => Ty::Text,
        _ => Ty::Other,
    }
}

fn check(node: &Node, schema: &Schema) -> Result<Ty, String> {
    let field = |name: &str| {
        schema
            .fields
            .get(name)
            .ok_or_else(|| format!("unknown field `{name}`"))
    };
    Ok(match node {
        Node::Int(_) => Ty::Int,
        Node::Bool(_) => Ty::Bool,
        Node::Str(_) => Ty::Text,
        Node::Field { name, .. } => match ty_of(&field(name)?.ty) {
            Ty::Other => {
                return Err(format!(
                    "field `{name}` is a {}: use len({name})",
                    field(name)?.ty.name()
                ))
            }
            t => t,
        },
        Node::Len { name, .. } => match field(name)?.ty {
            FieldType::String { .. }
            | FieldType::Bytes { .. }
            | FieldType::List { .. }
            | FieldType::Map { .. } => Ty::Int,
            ref t => return Err(format!("len() of a {} field `{name}`", t.name())),
        },
        Node::Not(e) => expect(check(e, schema)?, Ty::Bool, "`!`")?,
        Node::Neg(e) => expect(check(e, schema)?, Ty::Int, "unary `-`")?,
        Node::Bin(op, a, b) => {
            let (ta, tb) = (check(a, schema)?, check(b, schema)?);
            match op {
                BinOp::Or | BinOp::And => {
                    expect(ta, Ty::Bool, "`&&`/`||`")?;
                    expect(tb, Ty::Bool, "`&&`/`||`")?
                }
                BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
                    expect(ta, Ty::Int, "arithmetic")?;
                    expect(tb, Ty::Int, "arithmetic")?
                }
                BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                    expect(ta, Ty::Int, "ordering comparison")?;
                    expect(tb, Ty::Int, "ordering comparison")?;
                    Ty::Bool
                }
                BinOp::Eq | BinOp::Ne => {
                    if ta != tb {
                        return Err(format!("cannot compare {ta:?} with {tb:?}"));
                    }
                    check_enum_literal(a, b, schema)?;
                    check_enum_literal(b, a, schema)?;
                    Ty::Bool
                }
            }
        }
    })
}

/// `state == "opne"` against an enum is a typo the parser should catch.
fn check_enum_literal(a: &Node, b: &Node, schema: &Schema) -> Result<(), String> {
    if let (Node::Field { name, .. }, Node::Str(lit)) = (a, b) {
        if let Some(FieldType::Enum { variants }) = schema.fields.get(name).map(|f| &f.ty) {
            if !variants.iter().any(|v| v == lit) {
                return Err(format!("{lit:?} is not a variant of `{name}`"));
            }
        }
    }
    Ok(())
}

fn expect(got: Ty, want: Ty, what: &str) -> Result<Ty, String> {
    if got == want {
        Ok(want)
    } else {
        Err(format!("{what} needs {want:?} operands, got {got:?}"))
    }
}

/// The result of evaluating a sub-expression.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Val<'a> {
    Int(i64),
    Bool(bool),
    Text(&'a str),
}

impl Expr {
    /// Parses and type-checks `src` against `schema`; the result must be boolean.
    pub fn parse(src: &str, schema: &Schema) -> Result<Expr, String> {
        if src.len() > MAX_EXPR_LEN {
            return Err(format!("expression longer than {MAX_EXPR_LEN} bytes"));
        }
        let toks = lex(src)?;
        let mut p = Parser {
            toks: &toks,
            pos: 0,
            depth: 0,
        };
        let node = p.binary(0)?;
        if p.pos != toks.len() {
            return Err(format!(
                "unexpected {:?} after the expression",
                toks.get(p.pos)
            ));
        }
        if check(&node, schema)? != Ty::Bool {
            return Err("an invariant must be a boolean expression".into());
        }
        Ok(Expr { node })
    }

    /// Evaluates over the fields after (`now`) and before (`prev`) an entry.
    /// `Err` carries why the expression could not be evaluated (overflow, division by zero).
    pub fn eval(&self, now: &Fields, prev: &Fields) -> Result<bool, String> {
        match eval(&self.node, now, prev)? {
            Val::Bool(b) => Ok(b),
            _ => Err("not a boolean".into()),
        }
    }
}

fn eval<'a>(node: &'a Node, now: &'a Fields, prev: &'a Fields) -> Result<Val<'a>, String> {
    let lookup = |name: &str, p: bool| -> Result<&'a Value, String> {
        let src = if p { prev } else { now };
        src.get(name)
            .ok_or_else(|| format!("field `{name}` has no value"))
    };
    Ok(match node {
        Node::Int(i) => Val::Int(*i),
        Node::Bool(b) => Val::Bool(*b),
        Node::Str(s) => Val::Text(s),
        Node::Field { name, prev: p } => match lookup(name, *p)? {
            Value::Int(i) => Val::Int(*i),
            Value::Bool(b) => Val::Bool(*b),
            Value::Str(s) | Value::Enum(s) => Val::Text(s),
            _ => return Err(format!("field `{name}` is not a scalar")),
        },
        Node::Len { name, prev: p } => {
            let n = match lookup(name, *p)? {
                Value::Str(s) => s.len(),
                Value::Bytes(b) => b.len(),
                Value::List(l) => l.len(),
                Value::Map(m) => m.len(),
                _ => return Err(format!("len() of field `{name}`")),
            };
            Val::Int(i64::try_from(n).map_err(|_| "length overflow".to_string())?)
        }
        Node::Not(e) => match eval(e, now, prev)? {
            Val::Bool(b) => Val::Bool(!b),
            _ => return Err("`!` of a non-boolean".into()),
        },
        Node::Neg(e) => match eval(e, now, prev)? {
            Val::Int(i) => Val::Int(i.checked_neg().ok_or("integer overflow")?),
            _ => return Err("`-` of a non-integer".into()),
        },
        Node::Bin(op, a, b) => {
            // Short-circuit boolean operators.
            if matches!(op, BinOp::And | BinOp::Or) {
                let Val::Bool(x) = eval(a, now, prev)? else {
                    return Err("boolean operator on a non-boolean".into());
                };
                if (*op == BinOp::And && !x) || (*op == BinOp::Or && x) {
                    return Ok(Val::Bool(x));
                }
                let Val::Bool(y) = eval(b, now, prev)? else {
                    return Err("boolean operator on a non-boolean".into());
                };
                return Ok(Val::Bool(y));
            }
            let (x, y) = (eval(a, now, prev)?, eval(b, now, prev)?);
            match (op, x, y) {
                (BinOp::Eq, x, y) => Val::Bool(x == y),
                (BinOp::Ne, x, y) => Val::Bool(x != y),
                (op, Val::Int(x), Val::Int(y)) => match op {
                    BinOp::Lt => Val::Bool(x < y),
                    BinOp::Le => Val::Bool(x <= y),
                    BinOp::Gt => Val::Bool(x > y),
                    BinOp::Ge => Val::Bool(x >= y),
                    BinOp::Add => Val::Int(x.checked_add(y).ok_or("integer overflow")?),
                    BinOp::Sub => Val::Int(x.checked_sub(y).ok_or("integer overflow")?),
                    BinOp::Mul => Val::Int(x.checked_mul(y).ok_or("integer overflow")?),
                    BinOp::Div => Val::Int(x.checked_div(y).ok_or("division by zero or overflow")?),
                    BinOp::Rem => Val::Int(x.checked_rem(y).ok_or("division by zero or overflow")?),
                    _ => return Err("operator on mismatched operands".into()),
                },
                _ => return Err("operator on mismatched operands".into()),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::FieldSpec;

    fn schema() -> Schema {
        let mut s = Schema::default();
        let int = |min| FieldSpec {
            ty: FieldType::Int { min, max: None },
            default: Value::Int(0),
            immutable: false,
            monotonic: false,
            attestation_required: false,
        };
        s.fields.insert("balance".into(), int(Some(0)));
        s.fields.insert("limit".into(), int(None));
        s.fields.insert(
            "state".into(),
            FieldSpec {
                ty: FieldType::Enum {
                    variants: vec!["open".into(), "frozen".into()],
                },
                default: Value::Enum("open".into()),
                immutable: false,
                monotonic: false,
                attestation_required: false,
            },
        );
        s.fields.insert(
            "tags".into(),
            FieldSpec {
                ty: FieldType::List {
                    items: Box::new(FieldType::Int {
                        min: None,
                        max: None,
                    }),
                    max_items: 4,
                },
                default: Value::List(vec![]),
                immutable: false,
                monotonic: false,
                attestation_required: false,
            },
        );
        s
    }

    fn fields(balance: i64, limit: i64, state: &str) -> Fields {
        let mut f = Fields::new();
        f.insert("balance".into(), Value::Int(balance));
        f.insert("limit".into(), Value::Int(limit));
        f.insert("state".into(), Value::Enum(state.into()));
        f.insert("tags".into(), Value::List(vec![Value::Int(1)]));
        f
    }

    #[test]
    fn evaluates_with_precedence_and_prev() {
        let s = schema();
        let e = Expr::parse(
            "balance - prev.balance <= 10 * 2 + 1 && (state == \"open\" || !(limit > 0))",
            &s,
        )
        .unwrap();
        assert!(e
            .eval(&fields(21, 5, "open"), &fields(0, 5, "open"))
            .unwrap());
        assert!(!e
            .eval(&fields(22, 5, "open"), &fields(0, 5, "open"))
            .unwrap());
        assert!(!e
            .eval(&fields(1, 5, "frozen"), &fields(0, 5, "open"))
            .unwrap());
        assert!(e
            .eval(&fields(1, 0, "frozen"), &fields(0, 5, "open"))
            .unwrap());
        let l = Expr::parse("len(tags) <= 1 && len(prev.tags) == 1", &s).unwrap();
        assert!(l
            .eval(&fields(0, 0, "open"), &fields(0, 0, "open"))
            .unwrap());
    }

    #[test]
    fn overflow_and_division_by_zero_are_errors() {
        let s = schema();
        let e = Expr::parse("balance * 2 > 0", &s).unwrap();
        assert!(e
            .eval(&fields(i64::MAX, 0, "open"), &fields(0, 0, "open"))
            .is_err());
        let d = Expr::parse("balance / limit == 1", &s).unwrap();
        assert!(d
            .eval(&fields(5, 0, "open"), &fields(0, 0, "open"))
            .is_err());
    }

    #[test]
    fn type_and_name_errors_are_caught_at_parse() {
        let s = schema();
        for (src, needle) in [
            ("balance", "boolean"),
            ("nope > 1", "unknown field `nope`"),
            ("state == \"opne\"", "not a variant"),
            ("state > 1", "ordering"),
            ("balance && true", "`&&`"),
            ("tags == 1", "use len(tags)"),
            ("balance = 1", "use =="),
            ("(balance > 1", "expected `)`"),
            ("balance > 1 )", "after the expression"),
            ("99999999999999999999 > 1", "out of range"),
            ("\"x", "unterminated"),
        ] {
            let err = Expr::parse(src, &s).unwrap_err();
            assert!(err.contains(needle), "{src}: {err}");
        }
        let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
        assert!(Expr::parse(&deep, &s).unwrap_err().contains("deeper"));
    }
}
