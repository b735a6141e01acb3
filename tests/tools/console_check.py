"""Drives the web console in a real browser (Debian's chromium, through chromium-driver).

Usage: console_check.py BASE_URL ADMIN_SECRET THREAD_ID SHOTS_DIR

Signs in (a wrong secret first), opens the thread, watches its running turn finish, checks that a
<script> payload did not run, retries the dead letter, and saves screenshots. Each step prints a
line; the first failure raises.
"""
import pathlib
import sys
import time

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from browser import chromium

BASE, SECRET, THREAD, SHOTS = sys.argv[1], sys.argv[2], sys.argv[3], pathlib.Path(sys.argv[4])
SHOTS.mkdir(parents=True, exist_ok=True)

driver = chromium()
wait = WebDriverWait(driver, 30)


def sign_in(secret):
    field = wait.until(EC.presence_of_element_located((By.ID, "secret")))
    field.clear()
    field.send_keys(secret)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()


try:
    driver.get(BASE + "/console")
    sign_in("not-the-secret")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "p.error")))
    print("a wrong secret: the sign-in page again, with an error")
    sign_in(SECRET)
    wait.until(EC.presence_of_element_located((By.ID, "threads")))
    cookie = driver.get_cookie("inbox_console")
    assert cookie and cookie["httpOnly"] and cookie.get("sameSite") == "Strict", cookie
    print("signed in; the session cookie is HttpOnly and SameSite=Strict")
    driver.save_screenshot(str(SHOTS / "console-threads.png"))

    row = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, f'tr[data-thread="{THREAD}"]')))
    row.click()
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '.msg [data-state="running"]')))
    print("the thread shows its turn running")
    WebDriverWait(driver, 40).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, '.turn [data-state="done"]')))
    print("the turn finished, live")
    payload = driver.find_element(By.CSS_SELECTOR, ".msg .payload").text
    assert "<script>" in payload, payload
    assert driver.execute_script("return window.__xss === undefined"), "a payload ran script"
    print("a <script> payload is shown as text and did not run")
    WebDriverWait(driver, 30).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, '.deliveries [data-state="dead"]')))
    time.sleep(0.3)
    driver.save_screenshot(str(SHOTS / "console-thread.png"))

    driver.get(BASE + "/console#dead")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "button.retry")))
    driver.save_screenshot(str(SHOTS / "console-dead.png"))
    # Clicked by script: live updates re-render the view, so a found element may be replaced.
    driver.execute_script("document.querySelector('button.retry').click()")
    # Requeued, it is no dead letter any more: the list empties.
    wait.until(lambda d: d.execute_script("return document.querySelectorAll('button.retry').length") == 0)
    print("retried the dead letter from the console")
finally:
    driver.quit()
