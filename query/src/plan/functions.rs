//! ClickHouse aggregate functions analysts use daily, rewritten on the AST
//! into their DataFusion equivalents: the `-If` combinator becomes a FILTER
//! clause, `uniqExact` a DISTINCT count, `uniq` an approximate distinct count,
//! `any`/`anyLast` first/last value, `argMin`/`argMax` an ordered first value,
//! `groupArray` `array_agg`, and `quantile(p)(x)`/`median(x)` an approximate
//! percentile, `quantiles(…)(x)` an array of them. Scalar functions: casts
//! (`toString`, `toUInt64`, …) become `arrow_cast`, `if`/`multiIf` CASE,
//! `today()` `current_date()`.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    CaseWhen, DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentClause,
    FunctionArgumentList, FunctionArguments, Ident, ObjectName, OrderByExpr, OrderByOptions, Statement, Value,
    visit_expressions_mut,
};

use crate::error::QueryError;

const IF_BASES: &[&str] = &["count", "sum", "avg", "min", "max", "uniq", "uniqExact", "any", "anyLast", "groupArray"];

fn set_name(f: &mut Function, name: &str) {
    f.name = ObjectName::from(vec![Ident::new(name)]);
}

fn arg_list(f: &mut Function) -> Option<&mut FunctionArgumentList> {
    match &mut f.args {
        FunctionArguments::List(l) => Some(l),
        _ => None,
    }
}

fn plain_expr(a: &FunctionArg) -> Option<Expr> {
    match a {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
        _ => None,
    }
}

fn parameters(f: &Function) -> Vec<Expr> {
    match &f.parameters {
        FunctionArguments::List(l) => l.args.iter().filter_map(plain_expr).collect(),
        _ => Vec::new(),
    }
}

/// Rewrites one function call in place.
fn rewrite(f: &mut Function) -> Result<(), QueryError> {
    let Some(mut name) = f.name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.clone()) else { return Ok(()) };
    if f.name.0.len() != 1 {
        return Ok(());
    }
    // The -If combinator: the last argument is the condition.
    if let Some(base) = name.strip_suffix("If").filter(|b| IF_BASES.contains(b)) {
        let base = base.to_string();
        let Some(list) = arg_list(f) else { return Ok(()) };
        let cond = list
            .args
            .pop()
            .and_then(|a| plain_expr(&a))
            .ok_or_else(|| QueryError::arguments(format!("{name} requires a condition as its last argument")))?;
        if base == "count" && list.args.is_empty() {
            list.args.push(FunctionArg::Unnamed(FunctionArgExpr::Wildcard));
        }
        f.filter = Some(Box::new(cond));
        set_name(f, &base);
        name = base;
    }
    if let Some(arrow) = cast_target(&name) {
        let Some(list) = arg_list(f) else { return Ok(()) };
        if list.args.len() != 1 {
            return Err(QueryError::arguments(format!("{name} takes one argument")));
        }
        list.args.push(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::value(Value::SingleQuotedString(
            arrow.to_string(),
        )))));
        set_name(f, "arrow_cast");
        return Ok(());
    }
    let unit_call =
        date_part_unit(&name).map(|u| (u, "date_part")).or(trunc_unit(&name).map(|(u, _)| (u, "date_trunc")));
    if let Some((unit, func)) = unit_call {
        let Some(list) = arg_list(f) else { return Ok(()) };
        if list.args.len() != 1 {
            return Err(QueryError::arguments(format!("{name} takes one argument")));
        }
        list.args.insert(
            0,
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::value(Value::SingleQuotedString(unit.into())))),
        );
        set_name(f, func);
        if trunc_unit(&name).is_some_and(|(_, to_date)| to_date) {
            // ClickHouse returns a Date for these.
            let inner = Expr::Function(f.clone());
            if let Some(list) = arg_list(f) {
                list.args = vec![
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(inner)),
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::value(Value::SingleQuotedString(
                        "Date32".into(),
                    )))),
                ];
            }
            set_name(f, "arrow_cast");
        }
        return Ok(());
    }
    match name.as_str() {
        "today" => set_name(f, "current_date"),
        "countDistinct" | "groupBitmap" => {
            set_name(f, "count");
            if let Some(l) = arg_list(f) {
                l.duplicate_treatment = Some(DuplicateTreatment::Distinct);
            }
        }
        "uniqExact" => {
            set_name(f, "count");
            if let Some(l) = arg_list(f) {
                l.duplicate_treatment = Some(DuplicateTreatment::Distinct);
            }
        }
        "uniq" | "uniqCombined" | "uniqCombined64" | "uniqHLL12" => set_name(f, "approx_distinct"),
        "any" => set_name(f, "first_value"),
        "anyLast" => set_name(f, "last_value"),
        "groupArray" => set_name(f, "array_agg"),
        "argMax" | "argMin" => {
            let desc = name == "argMax";
            let Some(list) = arg_list(f) else { return Ok(()) };
            if list.args.len() != 2 {
                return Err(QueryError::arguments(format!("{name} takes two arguments")));
            }
            let by = list
                .args
                .pop()
                .and_then(|a| plain_expr(&a))
                .ok_or_else(|| QueryError::arguments(format!("bad {name} argument")))?;
            list.clauses.push(FunctionArgumentClause::OrderBy(vec![OrderByExpr {
                expr: by,
                options: OrderByOptions { asc: Some(!desc), nulls_first: None },
                with_fill: None,
            }]));
            set_name(f, "first_value");
        }
        "quantile" | "median" | "quantileExact" | "medianExact" => {
            let p = parameters(f).into_iter().next().unwrap_or(Expr::value(Value::Number("0.5".into(), false)));
            let Some(list) = arg_list(f) else { return Ok(()) };
            let x = match list.args.as_slice() {
                [a] => plain_expr(a).ok_or_else(|| QueryError::arguments(format!("bad {name} argument")))?,
                _ => return Err(QueryError::arguments(format!("{name} takes one argument"))),
            };
            list.args = vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(p))];
            f.parameters = FunctionArguments::None;
            f.within_group = vec![OrderByExpr {
                expr: x,
                options: OrderByOptions { asc: None, nulls_first: None },
                with_fill: None,
            }];
            set_name(f, "approx_percentile_cont");
        }
        _ => {}
    }
    Ok(())
}

/// `toYear(x)` and friends as `date_part(unit, x)`.
fn date_part_unit(name: &str) -> Option<&'static str> {
    Some(match name {
        "toYear" => "year",
        "toQuarter" => "quarter",
        "toMonth" => "month",
        "toDayOfMonth" => "day",
        "toDayOfYear" => "doy",
        // ClickHouse's default week mode: Monday is 1, Sunday 7 (ISO).
        "toDayOfWeek" => "isodow",
        "toHour" => "hour",
        "toMinute" => "minute",
        "toSecond" => "second",
        _ => return None,
    })
}

/// `toStartOfYear(x)` and friends as `date_trunc(unit, x)`; true when
/// ClickHouse's result is a Date.
fn trunc_unit(name: &str) -> Option<(&'static str, bool)> {
    Some(match name {
        "toStartOfYear" => ("year", true),
        "toStartOfQuarter" => ("quarter", true),
        "toMonday" => ("week", true),
        "toStartOfMinute" => ("minute", false),
        "toStartOfSecond" => ("second", false),
        _ => return None,
    })
}

/// The Arrow type a ClickHouse conversion function casts to.
fn cast_target(name: &str) -> Option<&'static str> {
    Some(match name {
        "toString" => "Utf8",
        "toUInt8" => "UInt8",
        "toUInt16" => "UInt16",
        "toUInt32" => "UInt32",
        "toUInt64" => "UInt64",
        "toInt8" => "Int8",
        "toInt16" => "Int16",
        "toInt32" => "Int32",
        "toInt64" => "Int64",
        "toFloat32" => "Float32",
        "toFloat64" => "Float64",
        "toDateTime" => "Timestamp(Second, None)",
        _ => return None,
    })
}

fn case(conditions: Vec<CaseWhen>, else_result: Expr) -> Expr {
    Expr::Case {
        case_token: AttachedToken::empty(),
        end_token: AttachedToken::empty(),
        operand: None,
        conditions,
        else_result: Some(Box::new(else_result)),
    }
}

/// Rewrites calls that become another kind of expression; `None` if `e` is not one.
fn rewrite_expr(e: &Expr) -> Result<Option<Expr>, QueryError> {
    let Expr::Function(f) = e else { return Ok(None) };
    let Some(name) = f.name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.clone()) else { return Ok(None) };
    let args = || match &f.args {
        FunctionArguments::List(l) => l.args.iter().filter_map(plain_expr).collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    match name.as_str() {
        "if" => {
            let [c, a, b]: [Expr; 3] = args()
                .try_into()
                .map_err(|_| QueryError::arguments("if takes three arguments: if(cond, then, else)"))?;
            Ok(Some(case(vec![CaseWhen { condition: c, result: a }], b)))
        }
        "multiIf" => {
            let mut a = args();
            if a.len() < 3 || a.len() % 2 == 0 {
                return Err(QueryError::arguments(
                    "multiIf takes cond1, then1, …, else: an odd number ≥ 3 of arguments",
                ));
            }
            let otherwise = a.pop().unwrap_or(Expr::value(Value::Null));
            let mut conditions = Vec::new();
            let mut it = a.into_iter();
            while let (Some(condition), Some(result)) = (it.next(), it.next()) {
                conditions.push(CaseWhen { condition, result });
            }
            Ok(Some(case(conditions, otherwise)))
        }
        "quantiles" | "quantilesExact" => {
            let mut items = Vec::new();
            for p in parameters(f) {
                let mut one = f.clone();
                one.parameters = FunctionArguments::List(FunctionArgumentList {
                    duplicate_treatment: None,
                    args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(p))],
                    clauses: Vec::new(),
                });
                set_name(&mut one, "quantile");
                rewrite(&mut one)?;
                items.push(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Function(one))));
            }
            let mut arr = f.clone();
            arr.parameters = FunctionArguments::None;
            arr.args = FunctionArguments::List(FunctionArgumentList {
                duplicate_treatment: None,
                args: items,
                clauses: Vec::new(),
            });
            set_name(&mut arr, "make_array");
            Ok(Some(Expr::Function(arr)))
        }
        _ => Ok(None),
    }
}

/// Rewrites every ClickHouse function call in a statement.
pub fn rewrite_statement(stmt: &mut Statement) -> Result<(), QueryError> {
    let mut err = None;
    let _ = visit_expressions_mut(stmt, |e| {
        let r = match rewrite_expr(e) {
            Ok(Some(new)) => {
                *e = new;
                Ok(())
            }
            Ok(None) => match e {
                Expr::Function(f) => rewrite(f),
                _ => Ok(()),
            },
            Err(x) => Err(x),
        };
        if let Err(x) = r {
            err = Some(x);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    if let Some(e) = err {
        return Err(e);
    }
    // After the -If and if() rewrites, which move conditions into FILTER and CASE.
    super::truthiness::rewrite(stmt);
    Ok(())
}
