"""Templates render in a sandbox: HTML escaped, text not, missing variables named."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from email_worker.errors import TemplateNotFound, TemplateRenderError
from email_worker.kinds import KINDS, get_kind
from email_worker.rendering.renderer import Renderer, check_syntax, render_inline

renderer = Renderer()


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_every_kind_renders_all_parts_from_its_sample_data(kind) -> None:  # type: ignore[no-untyped-def]
    content = renderer.render(kind.template, dict(kind.sample_data))
    assert content.subject and "\n" not in content.subject
    assert content.html and "<html" in content.html.lower()
    assert content.text.strip()
    assert "{{" not in content.html + content.text + content.subject


def test_data_is_escaped_in_html_only() -> None:
    data = {**dict(KINDS[2].sample_data), "user_name": "<b>Ann & Co</b>"}
    content = renderer.render("welcome_email", data)
    assert "&lt;b&gt;Ann &amp; Co&lt;/b&gt;" in (content.html or "")
    assert "<b>Ann & Co</b>" not in (content.html or "")
    assert "<b>Ann & Co</b>" in content.text


def test_a_missing_variable_is_named() -> None:
    with pytest.raises(TemplateRenderError, match="missing variable: 'verification_url'"):
        renderer.render("email_verification", {"user_name": "Ann", "expires_in_hours": 1})


def test_an_unknown_template_is_named() -> None:
    assert not renderer.exists("no_such_template")
    with pytest.raises(TemplateNotFound, match="'no_such_template'"):
        renderer.render("no_such_template", {})


def test_a_template_with_only_html_gets_a_text_part() -> None:
    content = renderer.render("html_only_notice", {"title": "Maintenance", "message": "Sunday."})
    assert "Maintenance" in content.text and "<" not in content.text


def test_subject_is_always_one_line() -> None:
    content = renderer.render(
        "generic_notice", {"title": "Hi\r\nBcc: x@evil.example", "message": "m"}
    )
    assert "\r" not in content.subject and "\n" not in content.subject


def test_templates_dir_overrides_the_built_in_ones(tmp_path: Path) -> None:
    folder = tmp_path / "welcome_email"
    folder.mkdir()
    (folder / "subject.txt").write_text("Hello {{ user_name }}")
    (folder / "body.txt").write_text("Custom body for {{ user_name }}")
    custom = Renderer(template_dirs=[tmp_path])
    content = custom.render("welcome_email", {"user_name": "Ann"})
    assert content.subject == "Hello Ann"
    assert content.text == "Custom body for Ann" and content.html is None


def test_the_sandbox_refuses_unsafe_attribute_access(tmp_path: Path) -> None:
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "subject.txt").write_text("{{ ''.__class__.__mro__ }}")
    (folder / "body.txt").write_text("x")
    with pytest.raises(TemplateRenderError):
        Renderer(template_dirs=[tmp_path]).render("evil", {})


def test_syntax_errors_give_the_line() -> None:
    with pytest.raises(TemplateRenderError, match="line 2"):
        check_syntax("fine\n{% if %}\n")


def test_inline_content_is_not_a_template() -> None:
    content = render_inline("Total {{ 1 + 1 }}", "<p>{{ x }}</p>", None)
    assert content.subject == "Total {{ 1 + 1 }}"
    assert content.text == "{{ x }}\n"


def test_a_variable_named_self_renders_normally(tmp_path: Path) -> None:
    data = {**dict(KINDS[2].sample_data), "self": "x"}
    content = renderer.render("welcome_email", data)
    assert "Ann Lee" in content.text
    folder = tmp_path / "uses_self"
    folder.mkdir()
    (folder / "subject.txt").write_text("Hello {{ user_name }}")
    (folder / "body.txt").write_text("{{ user_name }}")
    assert Renderer(template_dirs=[tmp_path]).render("uses_self", data).subject == "Hello Ann Lee"


def test_stored_templates_do_not_import_the_renderer() -> None:
    code = (
        "import sys, email_worker.rendering.stored_templates;"
        " print('email_worker.rendering.renderer' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"


def write_template(folder: Path, template_id: str, subject: str) -> None:
    (folder / template_id).mkdir(exist_ok=True)
    (folder / template_id / "subject.txt").write_text(subject)
    (folder / template_id / "body.txt").write_text("Body for {{ user_name }}")


def test_a_template_added_is_found_at_once(tmp_path: Path) -> None:
    current = Renderer(template_dirs=[tmp_path], recheck_after=60)
    assert not current.exists("added_later")
    write_template(tmp_path, "added_later", "Hello {{ user_name }}")
    assert current.exists("added_later")
    assert current.render("added_later", {"user_name": "Ann"}).subject == "Hello Ann"


def test_template_files_are_read_again_after_the_cache_time(tmp_path: Path) -> None:
    write_template(tmp_path, "notice", "First {{ user_name }}")
    current = Renderer(template_dirs=[tmp_path], recheck_after=0.3)
    assert current.render("notice", {"user_name": "Ann"}).subject == "First Ann"
    write_template(tmp_path, "notice", "Second {{ user_name }}")
    assert current.render("notice", {"user_name": "Ann"}).subject == "First Ann"  # cached
    time.sleep(0.4)
    assert current.render("notice", {"user_name": "Ann"}).subject == "Second Ann"


def test_a_removed_template_is_gone_after_the_cache_time(tmp_path: Path) -> None:
    write_template(tmp_path, "retired", "Hello")
    current = Renderer(template_dirs=[tmp_path], recheck_after=0.3)
    assert current.exists("retired")
    shutil.rmtree(tmp_path / "retired")
    time.sleep(0.4)
    assert not current.exists("retired")
    with pytest.raises(TemplateNotFound):
        current.render("retired", {})


def test_the_variables_needed_are_those_of_the_template_in_use(tmp_path: Path) -> None:
    # An override with only a subject and a text body: the shipped HTML is not its part.
    write_template(tmp_path, "welcome_email", "Hello {{ nickname }}")
    current = Renderer(template_dirs=[tmp_path], recheck_after=0.3)
    assert current.required_variables("welcome_email") == {"nickname", "user_name"}
    assert renderer.required_variables("welcome_email") == {
        "product_name",
        "login_url",
        "user_name",
    }


def test_the_variables_needed_are_kept_for_the_cache_time_then_read_again(tmp_path: Path) -> None:
    write_template(tmp_path, "notice", "First {{ user_name }}")
    current = Renderer(template_dirs=[tmp_path], recheck_after=0.3)
    assert current.required_variables("notice") == {"user_name"}
    write_template(tmp_path, "notice", "Second {{ order_number }}")
    assert current.required_variables("notice") == {"user_name"}  # cached
    time.sleep(0.4)
    assert current.required_variables("notice") == {"order_number", "user_name"}
    assert current.required_variables("no_such_template") == set()  # refused as unknown instead


def test_the_unsubscribe_link_the_worker_adds_is_not_needed(tmp_path: Path) -> None:
    write_template(tmp_path, "digest", "Digest for {{ user_name }}")
    (tmp_path / "digest" / "body.txt").write_text("Leave: {{ unsubscribe_url }}")
    current = Renderer(template_dirs=[tmp_path])
    assert current.required_variables("digest") == {"user_name"}


def test_data_of_an_unexpected_shape_is_a_render_error_naming_the_line_not_the_data() -> None:
    data = {**dict(get_kind("newsletter").sample_data), "events": 5}
    with pytest.raises(TemplateRenderError) as caught:
        renderer.render("newsletter", data)
    assert str(caught.value).startswith("template 'newsletter' (body.html): TypeError at body.html")
    data = {**dict(get_kind("newsletter").sample_data), "intro": "Ann Lee"}
    data["events"] = [{"name": "Ann Lee", "url": "x"}, "Ann Lee"]  # a string has no .url
    with pytest.raises(TemplateRenderError) as caught:
        renderer.render("newsletter", data)
    assert "Ann Lee" not in str(caught.value)


def test_a_layout_that_cannot_be_found_is_named(tmp_path: Path) -> None:
    write_template(tmp_path, "framed", "Hello")
    (tmp_path / "framed" / "body.html").write_text('{% extends "_layout/gone.html" %}')
    with pytest.raises(
        TemplateRenderError, match="'framed' \\(body.html\\): '_layout/gone.html' not"
    ):
        Renderer(template_dirs=[tmp_path]).render("framed", {})
