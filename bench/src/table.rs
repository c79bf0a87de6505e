//! A Markdown table, built row by row.

/// A table: its header, then its rows, each cell as text.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: ToString>(header: impl IntoIterator<Item = S>) -> Table {
        Table {
            header: header.into_iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<S: ToString>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Table {
        self.rows
            .push(cells.into_iter().map(|c| c.to_string()).collect());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table in Markdown, a line per row; a `|` in a cell is escaped.
    pub fn render(&self) -> String {
        let line = |cells: &[String]| {
            let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = line(&self.header);
        out.push_str(&format!("|{}\n", " --- |".repeat(self.header.len())));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// `value` with `decimals` decimals, or `n/a`.
pub fn num(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".into(), |v| format!("{v:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_has_its_header_a_rule_and_a_line_per_row() {
        let mut table = Table::new(["name", "value"]);
        assert!(table.is_empty());
        table.row(["a", "1"]).row(["b|c", "2"]);
        assert_eq!(
            table.render(),
            "| name | value |\n| --- | --- |\n| a | 1 |\n| b\\|c | 2 |\n"
        );
        assert_eq!(num(Some(2.0 / 3.0), 3), "0.667");
        assert_eq!(num(None, 1), "n/a");
    }
}
