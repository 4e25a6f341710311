//! Reading a row's columns the same way from either engine, so that each table's row is turned
//! into its record by one function whichever store read it.

/// A result row of SQLite or PostgreSQL, read by column index.
pub(crate) trait Cols {
    type Err;
    fn text(&self, i: usize) -> Result<String, Self::Err>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, Self::Err>;
    fn int(&self, i: usize) -> Result<i64, Self::Err>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, Self::Err>;
    /// A stored name that is not one of ours (a newer gateway's, or an edited database): an
    /// error that says which column held what.
    fn unknown(&self, i: usize, what: &str, value: String) -> Self::Err;

    fn uint(&self, i: usize) -> Result<u64, Self::Err> {
        Ok(self.int(i)?.max(0) as u64)
    }
    fn opt_uint(&self, i: usize) -> Result<Option<u64>, Self::Err> {
        Ok(self.opt_int(i)?.map(|v| v.max(0) as u64))
    }
}

impl Cols for rusqlite::Row<'_> {
    type Err = rusqlite::Error;
    fn text(&self, i: usize) -> rusqlite::Result<String> {
        self.get(i)
    }
    fn opt_text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }
    fn int(&self, i: usize) -> rusqlite::Result<i64> {
        self.get(i)
    }
    fn opt_int(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }
    fn unknown(&self, i: usize, what: &str, value: String) -> rusqlite::Error {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown {what} '{value}'").into(),
        )
    }
}

impl Cols for tokio_postgres::Row {
    type Err = anyhow::Error;
    fn text(&self, i: usize) -> anyhow::Result<String> {
        Ok(self.try_get(i)?)
    }
    fn opt_text(&self, i: usize) -> anyhow::Result<Option<String>> {
        Ok(self.try_get(i)?)
    }
    fn int(&self, i: usize) -> anyhow::Result<i64> {
        Ok(self.try_get(i)?)
    }
    fn opt_int(&self, i: usize) -> anyhow::Result<Option<i64>> {
        Ok(self.try_get(i)?)
    }
    fn unknown(&self, i: usize, what: &str, value: String) -> anyhow::Error {
        anyhow::anyhow!("column {i}: unknown {what} '{value}'")
    }
}
