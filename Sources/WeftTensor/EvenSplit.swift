import CKernels

/// Part `index` of `total` items cut into `parts` near-equal contiguous ranges
/// (earlier parts take the remainder): the same split the C kernels use
/// (`weft_split_range`), so Swift and C always agree on who owns what.
public func evenSplit(_ total: Int, parts: Int, index: Int) -> Range<Int> {
    var begin = 0, end = 0
    weft_split_range(total, Int32(parts), Int32(index), &begin, &end)
    return begin ..< end
}
