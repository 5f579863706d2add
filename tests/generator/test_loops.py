"""The loop guard: a repeating tail is found, generation stops on it, one copy is kept."""
import torch

from generator.loops import LoopStop, cut_loop, last_whole_sentence, loop_period


def test_a_phrase_repeated_at_the_tail_is_a_loop_and_one_copy_is_kept():
    head, phrase = [5, 6, 7], [11, 12, 13, 14]
    ids = head + phrase * 5 + phrase[:2]  # stopped inside a sixth copy
    period = loop_period(ids)
    assert period == 4
    assert cut_loop(ids, period) == head + phrase


def test_a_sentence_written_twice_in_a_row_is_a_loop():
    sentence = list(range(100, 120))
    assert loop_period([1, 2] + sentence * 2) == 20
    assert cut_loop([1, 2] + sentence * 2, 20) == [1, 2] + sentence


def test_varied_text_and_a_phrase_recurring_with_words_between_are_not_loops():
    assert loop_period(list(range(200))) is None
    phrase = [7, 8, 9, 10, 11, 12, 13, 14, 15]
    assert loop_period([1] + phrase + [2, 3] + phrase + [4, 5] + phrase) is None
    assert loop_period([3] * 15) is None  # shorter than the minimum span
    assert loop_period([3] * 16) == 1


def test_the_stopping_criterion_stops_only_looping_rows():
    stop = LoopStop()
    ids = torch.tensor([list(range(40)), list(range(8)) + [9, 10] * 16])
    assert stop(ids, None).tolist() == [False, True]
    assert stop.found == 2


def test_an_unfinished_sentence_after_the_last_whole_one_is_dropped():
    assert last_whole_sentence("Mass is 3.5 cm. The anterior and posterior of") == "Mass is 3.5 cm."
    assert last_whole_sentence("右肺见结节。右肺下叶的") == "右肺见结节。"
    assert last_whole_sentence("no sentence end here") == "no sentence end here"
