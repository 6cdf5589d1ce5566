"""Texts of the hosted payment pages in Russian, English and Kazakh.

A plain table: each key has one text per language, formatted with `str.format` fields. Russian is
the fallback, as it is the protocol's default `pg_language`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

LANGUAGES = ("ru", "en", "kk")
DEFAULT_LANGUAGE = "ru"
LANGUAGE_NAMES = {"ru": "Русский", "en": "English", "kk": "Қазақша"}

TEXTS: dict[str, dict[str, str]] = {
    # Page frame
    "page_title": {"ru": "Оплата", "en": "Payment", "kk": "Төлем"},
    "language": {"ru": "Язык", "en": "Language", "kk": "Тіл"},
    "payment_no": {"ru": "Платёж № {id}", "en": "Payment No. {id}", "kk": "№ {id} төлем"},
    "merchant": {"ru": "Магазин", "en": "Shop", "kk": "Дүкен"},
    "order": {"ru": "Заказ", "en": "Order", "kk": "Тапсырыс"},
    "description": {"ru": "Назначение", "en": "Description", "kk": "Төлем мақсаты"},
    "amount": {"ru": "Сумма", "en": "Amount", "kk": "Сома"},
    "card": {"ru": "Карта", "en": "Card", "kk": "Карта"},
    "phone": {"ru": "Телефон", "en": "Phone", "kk": "Телефон"},
    "time_left": {"ru": "Осталось времени", "en": "Time left", "kk": "Қалған уақыт"},
    "pay_until": {
        "ru": "Оплатите до {time} UTC",
        "en": "Pay before {time} UTC",
        "kk": "{time} UTC дейін төлеңіз",
    },
    "test_mode": {
        "ru": "Тестовый режим: деньги не списываются.",
        "en": "Test mode: no money is charged.",
        "kk": "Тест режимі: ақша есептен шығарылмайды.",
    },
    "secure_note": {
        "ru": "Данные карты передаются по защищённому соединению и не передаются магазину.",
        "en": "Card details travel over a secure connection and are never shared with the shop.",
        "kk": "Карта деректері қорғалған байланыс арқылы жіберіледі және дүкенге берілмейді.",
    },
    # Method choice and the card form
    "choose_method": {"ru": "Способ оплаты", "en": "Payment method", "kk": "Төлем тәсілі"},
    "method_card": {"ru": "Банковская карта", "en": "Bank card", "kk": "Банк картасы"},
    "method_phone": {"ru": "Баланс телефона", "en": "Phone balance", "kk": "Телефон балансы"},
    "card_number": {"ru": "Номер карты", "en": "Card number", "kk": "Карта нөмірі"},
    "card_exp": {"ru": "Срок действия", "en": "Expiry date", "kk": "Жарамдылық мерзімі"},
    "card_exp_placeholder": {"ru": "ММ/ГГ", "en": "MM/YY", "kk": "АА/ЖЖ"},
    "card_holder": {"ru": "Владелец карты", "en": "Cardholder name", "kk": "Карта иесі"},
    "card_holder_hint": {
        "ru": "Латиницей, как на карте",
        "en": "As printed on the card",
        "kk": "Латынша, картадағыдай",
    },
    "cvc": {"ru": "CVC/CVV", "en": "CVC/CVV", "kk": "CVC/CVV"},
    "cvc_hint": {
        "ru": "3 цифры на обороте карты",
        "en": "3 digits on the back of the card",
        "kk": "Картаның артындағы 3 сан",
    },
    "pay_button": {"ru": "Оплатить {amount}", "en": "Pay {amount}", "kk": "{amount} төлеу"},
    # Mobile commerce
    "phone_number": {"ru": "Номер телефона", "en": "Phone number", "kk": "Телефон нөмірі"},
    "phone_hint": {
        "ru": "С кодом страны, например +7 701 777 77 77",
        "en": "With the country code, e.g. +7 701 777 77 77",
        "kk": "Ел кодымен, мысалы +7 701 777 77 77",
    },
    "phone_text": {
        "ru": "Сумма спишется с баланса телефона. Мы отправим SMS с кодом подтверждения.",
        "en": "The amount is charged to your phone balance. We will send you a confirmation code by SMS.",
        "kk": "Сома телефон балансынан шегеріледі. Растау кодын SMS арқылы жібереміз.",
    },
    "get_code": {"ru": "Получить код", "en": "Get the code", "kk": "Кодты алу"},
    # 3-D Secure
    "tds_title": {"ru": "Подтверждение 3-D Secure", "en": "3-D Secure check", "kk": "3-D Secure растауы"},
    "tds_text": {
        "ru": "Банк просит подтвердить оплату картой {card}. Введите пароль 3-D Secure.",
        "en": "Your bank asks you to confirm the payment with card {card}. Enter the 3-D Secure password.",
        "kk": "Банк {card} картасымен төлемді растауды сұрайды. 3-D Secure құпиясөзін енгізіңіз.",
    },
    "tds_password": {"ru": "Пароль", "en": "Password", "kk": "Құпиясөз"},
    "tds_test_hint": {
        "ru": "Тестовый режим: тестовый пароль {password}",
        "en": "Test mode: test password {password}",
        "kk": "Тест режимі: тест құпиясөзі {password}",
    },
    "confirm": {"ru": "Подтвердить", "en": "Confirm", "kk": "Растау"},
    # OTP
    "otp_title": {"ru": "Код подтверждения", "en": "Confirmation code", "kk": "Растау коды"},
    "otp_text": {
        "ru": "Мы отправили SMS с кодом на номер {phone}.",
        "en": "We have sent a code by SMS to {phone}.",
        "kk": "{phone} нөміріне SMS арқылы код жібердік.",
    },
    "otp_code": {"ru": "Код из SMS", "en": "Code from the SMS", "kk": "SMS-тегі код"},
    "otp_wrong": {
        "ru": "Неверный код. Осталось попыток: {left}.",
        "en": "Wrong code. Attempts left: {left}.",
        "kk": "Код қате. Қалған әрекет саны: {left}.",
    },
    "otp_test_hint": {
        "ru": "Тестовый режим: код для этого номера — {code}",
        "en": "Test mode: the code for this test phone is {code}",
        "kk": "Тест режимі: бұл нөмірдің коды — {code}",
    },
    # Processing
    "processing_title": {
        "ru": "Платёж обрабатывается",
        "en": "Payment is being processed",
        "kk": "Төлем өңделуде",
    },
    "processing_text": {
        "ru": "Пожалуйста, подождите: страница обновится сама. Не оплачивайте повторно.",
        "en": "Please wait: this page refreshes by itself. Do not pay again.",
        "kk": "Күте тұрыңыз: бет өздігінен жаңарады. Қайта төлемеңіз.",
    },
    "refresh": {"ru": "Обновить", "en": "Refresh", "kk": "Жаңарту"},
    # Results
    "ok_title": {"ru": "Оплата прошла успешно", "en": "Payment successful", "kk": "Төлем сәтті өтті"},
    "ok_text": {
        "ru": "Спасибо! Платёж на сумму {amount} принят.",
        "en": "Thank you! Your payment of {amount} has been accepted.",
        "kk": "Рахмет! {amount} сомасындағы төлем қабылданды.",
    },
    "failed_title": {"ru": "Оплата не прошла", "en": "Payment failed", "kk": "Төлем өтпеді"},
    "failed_text": {
        "ru": "Деньги не списаны. Вы можете вернуться в магазин и попробовать снова.",
        "en": "No money was charged. You can return to the shop and try again.",
        "kk": "Ақша есептен шығарылмады. Дүкенге оралып, қайта көре аласыз.",
    },
    "canceled_title": {"ru": "Платёж отменён", "en": "Payment canceled", "kk": "Төлемнен бас тартылды"},
    "expired_title": {
        "ru": "Время на оплату истекло",
        "en": "The time to pay has run out",
        "kk": "Төлем уақыты өтіп кетті",
    },
    "expired_text": {
        "ru": "Платёж не был завершён вовремя. Деньги не списаны.",
        "en": "The payment was not completed in time. No money was charged.",
        "kk": "Төлем уақытында аяқталмады. Ақша есептен шығарылмады.",
    },
    "revoked_title": {"ru": "Платёж возвращён", "en": "Payment refunded", "kk": "Төлем қайтарылды"},
    "revoked_text": {
        "ru": "Магазин вернул деньги за этот платёж.",
        "en": "The shop has refunded this payment.",
        "kk": "Дүкен бұл төлемнің ақшасын қайтарды.",
    },
    "reason": {"ru": "Причина", "en": "Reason", "kk": "Себебі"},
    "error_code": {"ru": "Код ошибки", "en": "Error code", "kk": "Қате коды"},
    "return_shop": {"ru": "Вернуться в магазин", "en": "Return to the shop", "kk": "Дүкенге оралу"},
    "close_page": {
        "ru": "Магазин не указал адрес для возврата. Закройте эту страницу и вернитесь в магазин.",
        "en": "The shop left no address to return to. Close this page and go back to the shop.",
        "kk": "Дүкен қайту мекенжайын көрсетпеді. Бұл бетті жауып, дүкенге оралыңыз.",
    },
    "redirecting": {
        "ru": "Возвращаем вас в магазин…",
        "en": "Taking you back to the shop…",
        "kk": "Дүкенге қайтарып жатырмыз…",
    },
    "noscript_return": {
        "ru": "Нажмите кнопку, чтобы вернуться в магазин.",
        "en": "Press the button to return to the shop.",
        "kk": "Дүкенге оралу үшін батырманы басыңыз.",
    },
    "not_found_title": {"ru": "Платёж не найден", "en": "Payment not found", "kk": "Төлем табылмады"},
    "not_found_text": {
        "ru": "Проверьте ссылку, которую вы получили от магазина.",
        "en": "Check the link you got from the shop.",
        "kk": "Дүкеннен алған сілтемені тексеріңіз.",
    },
    # Payouts (the recipient's page of api/reg2nonreg)
    "payout_title": {"ru": "Получение выплаты", "en": "Receive a payout", "kk": "Төлемді алу"},
    "payout_no": {"ru": "Выплата № {id}", "en": "Payout No. {id}", "kk": "№ {id} аударым"},
    "payout_amount": {"ru": "Сумма выплаты", "en": "Payout amount", "kk": "Аударым сомасы"},
    "payout_text": {
        "ru": "{merchant} переведёт {amount} на вашу карту. Укажите её номер.",
        "en": "{merchant} will send {amount} to your card. Enter its number.",
        "kk": "{merchant} картаңызға {amount} аударады. Оның нөмірін енгізіңіз.",
    },
    "payout_button": {"ru": "Получить {amount}", "en": "Receive {amount}", "kk": "{amount} алу"},
    "payout_test_mode": {
        "ru": "Тестовый режим: деньги не переводятся.",
        "en": "Test mode: no money is sent.",
        "kk": "Тест режимі: ақша аударылмайды.",
    },
    "payout_test_cards": {
        "ru": "Тестовые карты для выплат:",
        "en": "Payout test cards:",
        "kk": "Аударымға арналған тест карталары:",
    },
    "payout_until": {
        "ru": "Укажите карту до {time} UTC",
        "en": "Enter a card before {time} UTC",
        "kk": "Картаны {time} UTC дейін енгізіңіз",
    },
    "payout_processing_title": {
        "ru": "Выплата обрабатывается",
        "en": "The payout is being processed",
        "kk": "Аударым өңделуде",
    },
    "payout_processing_text": {
        "ru": "Страница обновится сама. Вводить карту повторно не нужно.",
        "en": "This page refreshes by itself. There is no need to enter the card again.",
        "kk": "Бет өздігінен жаңарады. Картаны қайта енгізудің қажеті жоқ.",
    },
    "payout_ok_title": {"ru": "Деньги отправлены", "en": "The money has been sent", "kk": "Ақша жіберілді"},
    "payout_ok_text": {
        "ru": "Мы отправили {amount} на вашу карту.",
        "en": "We have sent {amount} to your card.",
        "kk": "Картаңызға {amount} жібердік.",
    },
    "payout_failed_title": {
        "ru": "Выплата не выполнена",
        "en": "The payout failed",
        "kk": "Аударым орындалмады",
    },
    "payout_failed_text": {
        "ru": "Деньги не отправлены. Обратитесь в {merchant}.",
        "en": "No money was sent. Please contact {merchant}.",
        "kk": "Ақша жіберілмеді. {merchant} хабарласыңыз.",
    },
    "payout_expired_title": {
        "ru": "Время на получение истекло",
        "en": "The time to receive the payout has run out",
        "kk": "Аударымды алу уақыты өтіп кетті",
    },
    "payout_expired_text": {
        "ru": "Карта не была указана вовремя, поэтому выплата отменена.",
        "en": "No card was entered in time, so the payout was canceled.",
        "kk": "Карта уақытында енгізілмеді, сондықтан аударым тоқтатылды.",
    },
    "payout_return": {"ru": "Вернуться на сайт", "en": "Back to the website", "kk": "Сайтқа оралу"},
    "payout_not_found_title": {
        "ru": "Выплата не найдена",
        "en": "Payout not found",
        "kk": "Аударым табылмады",
    },
    # Field errors
    "err_number_format": {
        "ru": "Номер карты должен содержать от 12 до 19 цифр",
        "en": "The card number must have 12 to 19 digits",
        "kk": "Карта нөмірі 12–19 саннан тұруы керек",
    },
    "err_number_invalid": {
        "ru": "Неверный номер карты",
        "en": "The card number is not valid",
        "kk": "Карта нөмірі қате",
    },
    "err_exp_format": {
        "ru": "Укажите срок действия в формате ММ/ГГ",
        "en": "Enter the expiry date as MM/YY",
        "kk": "Жарамдылық мерзімін АА/ЖЖ пішімінде енгізіңіз",
    },
    "err_exp_expired": {
        "ru": "Срок действия карты истёк",
        "en": "The card has expired",
        "kk": "Картаның жарамдылық мерзімі өтіп кеткен",
    },
    "err_holder_empty": {
        "ru": "Укажите имя владельца карты",
        "en": "Enter the cardholder's name",
        "kk": "Карта иесінің атын енгізіңіз",
    },
    "err_holder_latin": {
        "ru": "Имя владельца — латинскими буквами, как на карте",
        "en": "Enter the name in Latin letters, as printed on the card",
        "kk": "Атын картадағыдай латын әріптерімен енгізіңіз",
    },
    "err_holder_words": {
        "ru": "Укажите имя и фамилию владельца карты",
        "en": "Enter the cardholder's first and last name",
        "kk": "Карта иесінің аты мен тегін енгізіңіз",
    },
    "err_holder_long": {
        "ru": "Имя владельца слишком длинное",
        "en": "The cardholder's name is too long",
        "kk": "Карта иесінің аты тым ұзын",
    },
    "err_cvc": {
        "ru": "CVC должен содержать {digits} цифры",
        "en": "The CVC must have {digits} digits",
        "kk": "CVC {digits} саннан тұруы керек",
    },
    "err_system_unavailable": {
        "ru": "Этот способ оплаты сейчас недоступен: выберите другой или попробуйте позже",
        "en": "This payment method is unavailable right now: choose another one or try later",
        "kk": "Бұл төлем тәсілі қазір қолжетімсіз: басқасын таңдаңыз немесе кейінірек қайталаңыз",
    },
    "err_phone": {
        "ru": "Неверный номер телефона",
        "en": "Wrong phone number",
        "kk": "Телефон нөмірі қате",
    },
    "err_phone_not_accepted": {
        "ru": "Этот номер нельзя использовать для оплаты",
        "en": "This phone number cannot be used for payment",
        "kk": "Бұл нөмірді төлемге пайдалану мүмкін емес",
    },
    "err_password_empty": {"ru": "Введите пароль", "en": "Enter the password", "kk": "Құпиясөзді енгізіңіз"},
    "err_code_format": {
        "ru": "Введите код из SMS (только цифры)",
        "en": "Enter the code from the SMS (digits only)",
        "kk": "SMS-тегі кодты енгізіңіз (тек сандар)",
    },
    "err_invalid": {
        "ru": "Проверьте введённые данные",
        "en": "Check the data you entered",
        "kk": "Енгізілген деректерді тексеріңіз",
    },
    # Card storage (web/checkout/card_storage.py)
    "card_add_title": {"ru": "Привязка карты", "en": "Save a card", "kk": "Картаны байланыстыру"},
    "card_add_text": {
        "ru": "Для проверки карты на ней временно заблокируется {amount}; сумма сразу вернётся.",
        "en": "To check the card, {amount} is held on it for a moment and released at once.",
        "kk": "Картаны тексеру үшін онда {amount} уақытша бұғатталады және бірден қайтарылады.",
    },
    "card_add_payout_text": {
        "ru": "Карта для получения выплат: деньги с неё не списываются.",
        "en": "A card to receive payouts: nothing is charged to it.",
        "kk": "Төлемдерді алуға арналған карта: одан ақша шегерілмейді.",
    },
    "card_save_button": {"ru": "Привязать карту", "en": "Save the card", "kk": "Картаны байланыстыру"},
    "card_saved_title": {"ru": "Карта привязана", "en": "Card saved", "kk": "Карта байланыстырылды"},
    "card_saved_text": {
        "ru": "Магазин сможет использовать эту карту, не запрашивая её данные снова.",
        "en": "The shop can now use this card without asking for its details again.",
        "kk": "Дүкен бұл картаны деректерін қайта сұрамай пайдалана алады.",
    },
    "card_failed_title": {
        "ru": "Карта не привязана",
        "en": "Card not saved",
        "kk": "Карта байланыстырылмады",
    },
    "card_failed_text": {
        "ru": "Карту не удалось проверить. Попробуйте другую карту.",
        "en": "The card could not be verified. Try another card.",
        "kk": "Картаны тексеру мүмкін болмады. Басқа картаны қолданып көріңіз.",
    },
}

# Why a payment failed, by its failure code (pg_failure_code / pg_error_code).
FAILURES: dict[int, dict[str, str]] = {
    360: {
        "ru": "Время на оплату истекло",
        "en": "The payment's lifetime has passed",
        "kk": "Төлем уақыты өтіп кетті",
    },
    400: {
        "ru": "Платёж отменён магазином или платёжной системой",
        "en": "The payment was canceled by the shop or the payment system",
        "kk": "Төлемнен дүкен немесе төлем жүйесі бас тартты",
    },
    700: {
        "ru": "Ошибка во введённых данных",
        "en": "The data entered was wrong",
        "kk": "Енгізілген деректерде қате бар",
    },
    850: {
        "ru": "Нет платёжной системы, готовой принять платёж",
        "en": "No payment system can accept this payment",
        "kk": "Бұл төлемді қабылдай алатын төлем жүйесі жоқ",
    },
    10000: {
        "ru": "Сервис временно недоступен",
        "en": "The service is temporarily unavailable",
        "kk": "Қызмет уақытша қолжетімсіз",
    },
    10001: {
        "ru": "Обратитесь в банк, выпустивший карту",
        "en": "Please contact the bank that issued your card",
        "kk": "Картаны шығарған банкке хабарласыңыз",
    },
    10002: {"ru": "Недостаточно средств", "en": "Insufficient funds", "kk": "Қаражат жеткіліксіз"},
    10003: {
        "ru": "Превышено число попыток ввода кода",
        "en": "Too many wrong confirmation codes",
        "kk": "Растау кодын енгізу әрекеттерінің саны асып кетті",
    },
    10004: {
        "ru": "Не пройдена проверка 3-D Secure",
        "en": "3-D Secure authentication failed",
        "kk": "3-D Secure тексерісінен өтпеді",
    },
    10005: {"ru": "Неверные данные карты", "en": "Wrong card details", "kk": "Карта деректері қате"},
    10006: {
        "ru": "Превышен лимит частоты операций",
        "en": "Too many payments in a short time",
        "kk": "Операциялар жиілігінің шегі асып кетті",
    },
    10007: {
        "ru": "Отклонено службой безопасности банка",
        "en": "Declined by the bank's security checks",
        "kk": "Банктің қауіпсіздік қызметі қабылдамады",
    },
}

Translate = Callable[..., str]


MAX_ACCEPT_LANGUAGE = 512  # longer headers are read only up to here


def accepted_language(header: str | None) -> str | None:
    """The supported language the browser's Accept-Language prefers most, or None.

    Ranges are read with their q-values (`kk-KZ,ru;q=0.9,en;q=0.8`); a region is ignored; `*` and
    q=0 name nothing; between equal q-values the header's order decides."""
    if not header:
        return None
    best: tuple[float, int, str] | None = None
    for position, part in enumerate(header[:MAX_ACCEPT_LANGUAGE].split(",")):
        tag, _, params = part.strip().partition(";")
        lang = tag.strip().lower().split("-", 1)[0]
        if lang not in LANGUAGES:
            continue
        weight = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                weight = float(value.strip()[:5])
            except ValueError:
                continue
        if not 0 < weight <= 1:
            continue
        candidate = (-weight, position, lang)
        if best is None or candidate < best:
            best = candidate
    return best[2] if best else None


def pick_language(
    requested: str | None, payment_language: str | None, accept_language: str | None = None
) -> str:
    """`?lang=` when it names a supported language, else the payment's `pg_language`, else the
    browser's Accept-Language, else Russian."""
    for candidate in (requested, payment_language):
        if candidate:
            lang = candidate.strip().lower()
            if lang in LANGUAGES:
                return lang
    return accepted_language(accept_language) or DEFAULT_LANGUAGE


def translator(lang: str, table: dict[str, dict[str, str]] | None = None) -> Translate:
    texts_of = TEXTS if table is None else table

    def t(key: str, **fields: object) -> str:
        texts = texts_of[key]
        text = texts.get(lang) or texts[DEFAULT_LANGUAGE]
        return text.format(**fields) if fields else text

    return t


def failure_text(code: int | None, description: str | None, lang: str) -> str:
    """The payer-facing reason of a failure: translated for known codes, else the stored description."""
    known = FAILURES.get(code) if code is not None else None
    if known is not None:
        return known.get(lang) or known[DEFAULT_LANGUAGE]
    return description or ""


_DIGITS = re.compile(r"\d+")


def card_error(field: str, message: str) -> tuple[str, dict[str, object]]:
    """The text key (and its fields) for a card form error raised by the card rules."""
    text = message.lower()
    if field == "number":
        return ("err_number_format" if "digits" in text else "err_number_invalid"), {}
    if field in ("exp_month", "exp_year", "exp"):
        return ("err_exp_expired" if "expired" in text else "err_exp_format"), {}
    if field == "holder":
        if "latin" in text:
            return "err_holder_latin", {}
        if "first and last" in text:
            return "err_holder_words", {}
        if "at most" in text:
            return "err_holder_long", {}
        return "err_holder_empty", {}
    if field == "cvc":
        found = _DIGITS.search(text)
        return "err_cvc", {"digits": found.group() if found else "3"}
    return "err_invalid", {}
