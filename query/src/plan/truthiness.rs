//! ClickHouse's truthiness: a condition may be any number, true when it is
//! not 0 (`WHERE active`, `countIf(is_mobile)`, `NOT flag`, `a AND b` on
//! UInt8 columns). DataFusion wants booleans and rejects the plan, and types
//! are not known on the AST, so every condition that is not evidently
//! boolean is wrapped in `toBool(…)`, which passes booleans through and
//! turns numbers into `x != 0` (storage compiles it too, so such filters are
//! still pushed into the scan).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident,
    ObjectName, Query, SetExpr, Statement, UnaryOperator, Value, VisitMut, VisitorMut,
};

/// `e` when it is evidently boolean, else `toBool(e)`.
fn truthy(e: Expr) -> Expr {
    let maybe_number = match &e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Function(_) | Expr::Cast { .. } => true,
        Expr::Value(v) => matches!(v.value, Value::Number(..)),
        Expr::Nested(inner) => {
            return match truthy((**inner).clone()) {
                Expr::Function(f) => Expr::Function(f),
                _ => e,
            };
        }
        _ => false,
    };
    if !maybe_number || is_to_bool(&e) {
        return e;
    }
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new("toBool")]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(e))],
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn is_to_bool(e: &Expr) -> bool {
    matches!(e, Expr::Function(f) if f.name.0.len() == 1
        && f.name.0[0].as_ident().is_some_and(|i| i.value.eq_ignore_ascii_case("toBool")))
}

fn fix(slot: &mut Option<Expr>) {
    if let Some(e) = slot.take() {
        *slot = Some(truthy(e));
    }
}

fn fix_set(body: &mut SetExpr) {
    match body {
        SetExpr::Select(s) => {
            fix(&mut s.selection);
            fix(&mut s.having);
            fix(&mut s.prewhere);
            fix(&mut s.qualify);
        }
        SetExpr::SetOperation { left, right, .. } => {
            fix_set(left);
            fix_set(right);
        }
        _ => {}
    }
}

struct Truthiness;

impl VisitorMut for Truthiness {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        fix_set(&mut query.body);
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        match e {
            Expr::BinaryOp { left, op: BinaryOperator::And | BinaryOperator::Or | BinaryOperator::Xor, right } => {
                let l = std::mem::replace(&mut **left, Expr::value(Value::Null));
                **left = truthy(l);
                let r = std::mem::replace(&mut **right, Expr::value(Value::Null));
                **right = truthy(r);
            }
            Expr::UnaryOp { op: UnaryOperator::Not, expr } => {
                let x = std::mem::replace(&mut **expr, Expr::value(Value::Null));
                **expr = truthy(x);
            }
            Expr::Case { conditions, .. } => {
                for c in conditions {
                    let x = std::mem::replace(&mut c.condition, Expr::value(Value::Null));
                    c.condition = truthy(x);
                }
            }
            Expr::Function(f) => {
                if let Some(filter) = f.filter.take() {
                    f.filter = Some(Box::new(truthy(*filter)));
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Wraps the statement's numeric conditions in `toBool`.
pub fn rewrite(stmt: &mut Statement) {
    let _ = stmt.visit(&mut Truthiness);
}

/// A mutation's `WHERE` text (`ALTER … DELETE WHERE flag AND k > 3`,
/// `DELETE FROM t WHERE NOT flag`) with its numeric conditions wrapped in
/// `toBool`, for storage's compiler. Text that does not parse is returned
/// as it is: storage reports the error.
pub fn condition_text(sql: &str) -> String {
    use datafusion::sql::sqlparser::dialect::ClickHouseDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let parsed = Parser::new(&ClickHouseDialect {}).try_with_sql(sql).and_then(|mut p| p.parse_expr());
    let Ok(mut e) = parsed else { return sql.to_string() };
    let _ = e.visit(&mut Truthiness);
    truthy(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::condition_text;

    #[test]
    fn mutation_conditions_get_clickhouse_truthiness() {
        assert_eq!(condition_text("flag AND k > 3"), "toBool(flag) AND k > 3");
        assert_eq!(condition_text("NOT flag"), "NOT toBool(flag)");
        assert_eq!(condition_text("flag"), "toBool(flag)");
        assert_eq!(condition_text("k > 3 OR (a = 1)"), "k > 3 OR (a = 1)");
        assert_eq!(condition_text("k >"), "k >", "unparsable text is left for storage to report");
    }
}
