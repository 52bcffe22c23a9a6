"""Ticket files: what a finished level or round writes, read back exactly."""
import os

import chex
import jax
import numpy as np
import pytest

from jsnn.config import TrainConfig
from jsnn.models import build_model
from jsnn.runs.tickets import find_tickets, round_path, select_ticket
from jsnn.ticket import TicketError, load_ticket, save_ticket
from jsnn.variables import Variables, apply_model, init_variables


def _ticket_variables(config):
    model = build_model(config, 10)
    v = init_variables(model, jax.random.key(0), (1, 8, 8, 1))
    masks = jax.tree.map(lambda m: (np.random.default_rng(1).random(m.shape) < 0.3).astype(np.float32), v.masks)
    stats = jax.tree.map(lambda s: s + 0.5, v.batch_stats)
    return model, Variables(v.weights, masks, v.bn, stats)


def test_save_load_round_trip_is_exact(tmp_path):
    config = TrainConfig(dataset="digits").resolve("imp")
    model, variables = _ticket_variables(config)
    path = round_path(str(tmp_path), 3)
    save_ticket(path, config, 10, variables, {"round": 3, "test_accuracy": 0.5})
    ticket = load_ticket(path)
    chex.assert_trees_all_equal(ticket.variables, variables)
    assert ticket.config == config and ticket.info == {"round": 3, "test_accuracy": 0.5}
    images = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    a, _, _ = apply_model(model, variables, images, train=False)
    b, _, _ = apply_model(ticket.model, ticket.variables, images, train=False)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_find_and_select(tmp_path):
    config = TrainConfig(dataset="digits").resolve("imp")
    _, variables = _ticket_variables(config)
    w = str(tmp_path)
    for k in (0, 1, 2):
        save_ticket(round_path(w, k), config, 10, variables, {"round": k})
    assert [os.path.basename(p) for p in find_tickets(w)] == ["round_00.npz", "round_01.npz", "round_02.npz"]
    assert select_ticket(w).endswith("round_02.npz")
    assert select_ticket(w, round_index=1).endswith("round_01.npz")
    with pytest.raises(TicketError, match="this workdir has: tickets/round_00.npz"):
        select_ticket(w, round_index=7)
    with pytest.raises(TicketError, match="holds no tickets"):
        select_ticket(str(tmp_path / "empty"))


def test_damaged_ticket_is_a_clear_error(tmp_path):
    path = tmp_path / "ticket.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(TicketError, match="cannot be read"):
        load_ticket(str(path))
    assert path.read_bytes() == b"not a zip file"
