//! A vector taken item by item from its end, its memory given back in
//! steps as it empties: the union consumes a layer's entries while it
//! makes nodes of them, and the encoder the nodes while it writes the flat
//! tree, so that neither holds both whole at once (a layer of a million
//! entries lists 70 MB of them, and makes 64 MB of nodes).

/// Free slots that make the vector shrink: 64 Ki items (4 to 5 MiB of
/// entries or nodes) keep the reallocations few, and a vector that large
/// shrinks in place (its tail pages unmapped, nothing copied).
const STEP: usize = 1 << 16;

pub(crate) struct Shrinking<T>(Vec<T>);

impl<T> Shrinking<T> {
    /// The items from the last one back.
    pub(crate) fn from_back(items: Vec<T>) -> Shrinking<T> {
        Shrinking(items)
    }

    /// The items in order (the vector is reversed in place).
    pub(crate) fn in_order(mut items: Vec<T>) -> Shrinking<T> {
        items.reverse();
        Shrinking(items)
    }
}

impl<T> Iterator for Shrinking<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        let item = self.0.pop()?;
        if self.0.capacity() - self.0.len() >= STEP {
            self.0.shrink_to_fit();
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.0.len(), Some(self.0.len()))
    }
}

/// `len()` is the number of items left: from the back, the index of the
/// item just taken.
impl<T> ExactSizeIterator for Shrinking<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_in_order_or_from_the_back_and_the_vector_shrinks() {
        let n = 3 * STEP + 5;
        let items: Vec<usize> = (0..n).collect();
        let mut from_back = Shrinking::from_back(items.clone());
        let mut left = n;
        while let Some(item) = from_back.next() {
            left -= 1;
            assert_eq!((item, from_back.len()), (left, left));
            assert!(from_back.0.capacity() - from_back.0.len() < STEP);
        }
        assert!(Shrinking::in_order(items).eq(0..n));
    }
}
